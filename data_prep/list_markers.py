"""The list markers users put before items, shared by the regex baseline (which splits on
them) and the pipeline's reassembly (which answers each item after its own marker)."""

# a list marker at the start of a line: "1." "2)" "3、" "(4)" "（5）" "-" "•" "a)" "①"
LIST_MARKER = r"(?P<marker>\d{1,2}[.)）、:：]|[(（]\d{1,2}[)）]|[-*•・●▪–]|[a-hA-H][.)]|[①-⑳])"
