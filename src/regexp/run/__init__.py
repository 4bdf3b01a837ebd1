"""A run: its dir (the one owner of every file in it), a job, a population of jobs, resume."""
