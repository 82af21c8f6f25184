"""What users look at: the diagram model and its Graphviz, Mermaid and HTML writers (the viewer's page in viewer/)."""
