"""What-if experiments: one folder per question (see README.md in each)."""
