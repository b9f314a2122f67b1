"""What the book's chapters show: tables, plotly figures, tree views, the research's reference numbers, data notes."""
