"""chrF (Popović 2015) as an `evaluate` module that loads offline:
`evaluate.load("eval/metrics/chrf")`. Scores come from sacrebleu's reference implementation;
per-pair sentence scores are returned next to the corpus score."""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = "Character n-gram F-score (chrF, beta=2) between predictions and references, 0-100."
_KWARGS = """
Args:
    predictions: list of strings.
    references: list of strings (one reference per prediction).
    char_order: character n-gram order (default 6). word_order: word n-gram order (0 = chrF, 2 = chrF++).
Returns:
    score: corpus chrF; scores: sentence chrF per pair.
"""
_CITATION = """@inproceedings{popovic-2015-chrf, title={chr{F}: character n-gram {F}-score for automatic {MT} evaluation},
author={Popovi{\\'c}, Maja}, booktitle={Proceedings of the Tenth Workshop on Statistical Machine Translation}, year={2015}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, char_order=6, word_order=0):
        metric = CHRF(char_order=char_order, word_order=word_order)
        scores = [metric.sentence_score(p, [r]).score for p, r in zip(predictions, references, strict=True)]
        corpus = metric.corpus_score(list(predictions), [list(references)]).score if predictions else 0.0
        return {"score": corpus, "scores": scores}
