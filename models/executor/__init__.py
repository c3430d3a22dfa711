"""The masked-attention parallel executor: the sub-prompts of one decomposition run inside
one sequence (`core.ParallelExecutor`); `chat` turns prompts into the token ids it takes,
`benchmark` measures it against serial and batched generation
(`python -m models.executor.benchmark`)."""

from models.executor.chat import chat_messages, chat_token_ids, end_of_turn_ids, generated_length
from models.executor.core import BranchResult, ExecutionStats, ParallelExecutor, SamplingConfig

__all__ = [
    "BranchResult",
    "ExecutionStats",
    "ParallelExecutor",
    "SamplingConfig",
    "chat_messages",
    "chat_token_ids",
    "end_of_turn_ids",
    "generated_length",
]
