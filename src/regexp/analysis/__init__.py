"""What regexp reads back from run dirs: reports, replicas, bias-variance. Never imports the
engine."""
