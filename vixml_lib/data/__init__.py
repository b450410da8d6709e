"""Datasets: XML-repository file formats, preparation, tokenisation and the bundled demo catalogue."""
