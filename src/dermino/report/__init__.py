"""Reports: self-contained HTML and Markdown built from results files."""
