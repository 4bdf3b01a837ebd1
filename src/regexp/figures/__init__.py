"""Every figure, drawn with matplotlib off-screen or in a child process while a run trains."""
