"""Plain nn.Modules: no Lightning in here, so they can be reused, exported and tested alone."""
