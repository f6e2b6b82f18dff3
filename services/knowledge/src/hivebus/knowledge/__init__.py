"""hivebus knowledge: a Git repository of Markdown notes, written by one service."""
