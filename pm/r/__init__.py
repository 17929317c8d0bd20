"""R packages: DESCRIPTION, and the CRAN-like repository R installs from."""
