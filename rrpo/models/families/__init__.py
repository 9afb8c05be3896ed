"""One module per model family (a package for a ported architecture). The list, as import strings, is in
`rrpo.models.registry`; nothing here is imported until a family is asked for."""
