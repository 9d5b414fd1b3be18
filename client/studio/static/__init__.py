"""The studio's page: HTML, CSS and JavaScript (a package of data alone, as setuptools lists it)."""
