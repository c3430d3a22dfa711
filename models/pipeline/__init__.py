"""The product path: a prompt -> the decomposer -> its sub-prompts run as parallel branches
(or the prompt run serially) -> one reassembled answer.

    from models.decomposer import load_decomposer
    from models.pipeline import Pipeline
    from models.pipeline.answer import load_answerer
    from models.pipeline.config import AnswerConfig

    pipeline = Pipeline(load_decomposer("vllm", adapter=A), load_answerer("vllm", AnswerConfig()))
    result = pipeline.answer("Translate into French:\\n1. cat\\n2. dog")

`answer` holds the answer model on its two engines (the masked-attention executor, vLLM)
and the reassembly; `config` its settings. The evaluation (`eval.e2e`) runs the same
pieces stage by stage, so that each stage checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.schema import Record, render_subprompts
from models.decomposer.base import Decomposer, Decomposition
from models.pipeline.answer import Answerer, Run, reassemble


@dataclass
class PipelineAnswer:
    text: str  # what the user gets
    decomposition: Decomposition
    run: Run  # the parallel run of the sub-prompts, or the serial run of the prompt
    split: bool  # whether the sub-prompts ran (False: the prompt ran serially)

    @property
    def seconds(self) -> float:
        """Decomposer time plus answer time: what the user waits."""
        return self.decomposition.seconds + self.run.seconds


def runs_in_parallel(rec: Record, max_branches: int) -> bool:
    """Split, and within the branch limit: a decomposition with more sub-prompts runs the
    prompt serially (a decomposer that says n=800 must not cost 800 branches)."""
    return rec.parallelizable and len(render_subprompts(rec)) <= max_branches


@dataclass
class Pipeline:
    decomposer: Decomposer
    answerer: Answerer  # its config's max_branches is the branch limit

    def answer(self, prompt: str, rid: str = "prompt-0") -> PipelineAnswer:
        [decomposition] = self.decomposer.decompose([prompt], [rid])
        if runs_in_parallel(decomposition.record, self.answerer.cfg.max_branches):
            run = self.answerer.run_record(decomposition.record)
            return PipelineAnswer(reassemble(decomposition.record, run.texts), decomposition, run, True)
        run = self.answerer.serial(prompt)
        return PipelineAnswer(run.texts[0], decomposition, run, False)


__all__ = ["Pipeline", "PipelineAnswer", "runs_in_parallel"]
