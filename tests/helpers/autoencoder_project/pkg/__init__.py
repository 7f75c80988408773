"""The tutorial's autoencoder as a project of its own (tests of code runs)."""
