"""Graph -> Graph passes, each pure and testable alone."""
