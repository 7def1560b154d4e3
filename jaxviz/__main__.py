from jaxviz.cli import entry

entry()
