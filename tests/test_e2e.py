"""End-to-end evaluation: the rule-based decomposer, reassembly, the judge's bookkeeping,
the config, and the whole `python -m eval.e2e` run on the tiny model (executor backend,
transformers judge): every stage, the report, and resume after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from data_prep.config import ConfigError
from data_prep.schema import Record, check_record, errors
from eval.config import load_e2e_config
from eval.e2e.judge import debiased, judge_messages, preference
from eval.e2e.run import select_subset
from models.decomposer import load_decomposer
from models.pipeline.answer import reassemble


def _rec(prompt: str, **fields) -> Record:
    return Record(id="x", source="t", language="en", prompt=prompt, **fields)


def decompose(prompt: str) -> Record:
    return load_decomposer("rules").decompose([prompt])[0].record


def test_rules_split_a_marked_list_into_verbatim_items():
    rec = decompose("Translate into French:\n1. Good morning.\n2. Where is the {station}?\n3) Thank you")
    assert rec.parallelizable and rec.category == "translation"
    assert rec.data == ["Good morning.", "Where is the {station}?", "Thank you"]
    assert rec.template == "Translate into French:\n{data}"
    assert not errors(check_record(rec))


def test_rules_take_a_long_head_as_shared_context():
    passage = "The river rises in the hills. " * 15 + "Answer the questions:"
    rec = decompose(passage + "\n- Where does it rise?\n- How long is it?")
    assert rec.context == passage and rec.template == "{context}\n\n{data}"
    assert rec.data == ["Where does it rise?", "How long is it?"]


def test_rules_read_cjk_markers_and_counts():
    rec = decompose("请把下面的句子翻译成英文：\n（1）我很好\n（2）谢谢你")
    assert rec.data == ["我很好", "谢谢你"] and rec.category == "translation"
    rec = decompose("Give me 5 slogans for a bakery")
    assert (rec.n, rec.template, rec.category) == (5, "Give me 1 slogans for a bakery", "repeated_generation")


def test_rules_leave_other_prompts_serial():
    for prompt in ("Write a poem about the sea.", "Compare 2 cars and 3 bikes", "What is 15% of 40?"):
        assert not decompose(prompt).parallelizable, prompt


def test_reassembly_keeps_the_users_markers_and_order():
    rec = _rec(
        "Fix:\n3) teh cat\n7) a dogs",
        parallelizable=True,
        category="language_correction",
        template="Fix: {data}",
        data=["teh cat", "a dogs"],
    )
    assert reassemble(rec, ["the cat", " a dog\n"]) == "3) the cat\n\n7) a dog"
    inline = _rec(
        "Translate 'hi' and 'bye' to German",
        parallelizable=True,
        category="translation",
        template="Translate to German: {data}",
        data=["hi", "bye"],
    )
    assert reassemble(inline, ["Hallo", "Tschüss"]) == "1. Hallo\n\n2. Tschüss"


def test_verdicts_cancel_a_judges_position_bias():
    assert preference("B", "A") == ("win", "win", True)
    assert preference("A", "B") == ("loss", "loss", True)
    assert preference("A", "A") == ("loss", "win", False)  # position bias: always the first answer
    # a judge that always prefers position A: the averaged probabilities still separate the answers
    assert debiased([0.8, 0.15, 0.05], [0.9, 0.05, 0.05], tie_margin=0.02)["verdict"] == "win"
    assert debiased([0.9, 0.05, 0.05], [0.8, 0.15, 0.05], tie_margin=0.02)["verdict"] == "loss"
    assert debiased([0.85, 0.1, 0.05], [0.86, 0.1, 0.04], tie_margin=0.02)["verdict"] == "tie"
    msgs = judge_messages("q" * 50, "a" * 500, "b", max_chars=100)
    assert "[...cut]" in msgs[1]["content"] and "q" * 50 in msgs[1]["content"]


def test_the_subset_covers_every_category_and_is_fixed_by_the_seed(labelled_rows):
    gold = [Record.model_validate(r) for r in labelled_rows]
    groups = {r.category or "not_parallelizable" for r in gold}
    subset = select_subset(gold, len(groups), seed=3)
    assert {r.category or "not_parallelizable" for r in subset} == groups
    assert [r.id for r in subset] == [r.id for r in select_subset(gold, len(groups), seed=3)]


def test_a_decomposition_over_the_branch_limit_runs_serially():
    from eval.config import E2EConfig
    from eval.e2e.run import parallel_jobs
    from eval.e2e.workdir import runs_parallel

    cfg = E2EConfig(
        name="t", split="s", work_dir="w", decomposers=[{"name": "g", "backend": "gold"}], answer={"max_branches": 4}
    )
    many = _rec("Write slogans", parallelizable=True, category="repeated_generation", template="Write a slogan", n=800)
    few = many.model_copy(update={"n": 3})
    assert not runs_parallel(many, cfg) and runs_parallel(few, cfg)
    assert list(parallel_jobs(cfg, {"g": {"a": (many, 0.0), "b": (few, 0.0)}}).values()) == [few]


def test_bad_configs_name_the_problem(tmp_path):
    path = tmp_path / "c.yaml"
    base = {"name": "t", "split": "s.jsonl", "work_dir": "w", "decomposers": [{"name": "g", "backend": "gold"}]}
    for change, words in (
        ({"limt": 3}, "limt"),
        ({"decomposers": [{"name": "g", "backend": "gold"}] * 2}, "unique"),
        ({"engines": ["vllm"]}, "answers_from"),
        ({"decomposers": [{"name": "r", "backend": "rules", "adapter": "a"}]}, "adapter"),
    ):
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ConfigError, match=words):
            load_e2e_config(path)


def _write_split(path, labelled_rows, k=9):
    rows = [r for r in labelled_rows if len(r["prompt"]) < 300]
    picked, seen = [], set()
    for r in rows:  # one per category (and a serial one)
        if r["category"] not in seen:
            seen.add(r["category"])
            picked.append(r)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked[:k]), encoding="utf-8")
    return picked[:k]


def _config(tmp_path, labelled_rows, **fields):
    """An e2e config on a small split of the labelled rows, written to tmp_path/e2e.yaml."""
    split = tmp_path / "test.jsonl"
    rows = _write_split(split, labelled_rows)
    config = tmp_path / "e2e.yaml"
    base = {"split": str(split), "work_dir": str(tmp_path / "work"), "report_dir": str(tmp_path / "reports")}
    config.write_text(yaml.safe_dump({**base, **fields}))
    return config, split, rows


def _e2e(config, *extra):
    return subprocess.run(
        [sys.executable, "-m", "eval.e2e", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )


def test_e2e_runs_every_stage_writes_the_report_and_resumes(tmp_path, tiny_model_dir, labelled_rows):
    model = str(tiny_model_dir)
    config, _, rows = _config(
        tmp_path,
        labelled_rows,
        name="tiny",
        limit=6,
        decomposers=[
            {"name": "oracle", "backend": "gold"},
            {"name": "rules", "backend": "rules"},
            {"name": "tiny", "backend": "hf", "model": model, "max_new_tokens": 48},
        ],
        engines=["executor"],
        answer={"model": model, "serial_max_new_tokens": 12, "branch_max_new_tokens": 6},
        judge={"model": model, "backend": "hf", "max_chars": 300},
    )
    proc = _e2e(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    assert len((work / "quality" / "rules.jsonl").read_text().splitlines()) == len(rows)
    assert len((work / "latency" / "tiny.jsonl").read_text().splitlines()) == 6
    serial = [json.loads(x) for x in (work / "answers" / "executor.serial.jsonl").read_text().splitlines()]
    assert len(serial) == 6 and all(1 <= r["tokens"][0] <= 12 and r["seconds"] > 0 for r in serial)
    parallel = [json.loads(x) for x in (work / "answers" / "executor.parallel.jsonl").read_text().splitlines()]
    assert parallel and all(r["branches"] == len(r["texts"]) >= 2 for r in parallel)
    assert all(1 <= t <= 6 for r in parallel for t in r["tokens"])

    (report,) = (tmp_path / "reports").iterdir()
    res = json.loads((report / "results.json").read_text())
    assert set(res["e2e"]["overall"]) == {"oracle@executor", "rules@executor", "tiny@executor"}
    oracle = res["e2e"]["overall"]["oracle@executor"]
    assert oracle["prompts"] == 6 and oracle["split"] == sum(r["split"] for r in res["prompts"][:6])
    assert oracle["with_verdict"] == 6 and oracle["judged"] + oracle["same"] == 6
    assert res["quality"]["oracle"]["overall"]["parallelizable_f1"] == 1.0
    assert res["judge_control"]["pairs"] == 6  # each prompt's answer against another prompt's
    for r in res["prompts"]:
        assert r["pipeline_s"] == pytest.approx(r["decomposer_s"] + (r["parallel_s"] or r["serial_s"]), abs=1e-3)
    for png in ("speedup_by_category.png", "scaling_n.png", "retention.png", "f1_by_language.png"):
        assert (report / png).stat().st_size > 1000
    md = (report / "report.md").read_text()
    assert "| oracle@executor |" in md and "parallelizable F1 by language" in md

    # an interrupted run: a torn last line and a lost verdict are redone, nothing else is
    judge = work / "judge.jsonl"
    verdicts = judge.read_text().splitlines()
    judge.write_text("\n".join(verdicts[:-1]) + "\n" + verdicts[-1][:10])
    before = (work / "answers" / "executor.serial.jsonl").read_text()
    proc = _e2e(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "answers" / "executor.serial.jsonl").read_text() == before
    assert judge.read_text().splitlines()[:-1] == verdicts[:-1] and len(judge.read_text().splitlines()) == len(verdicts)


def test_e2e_refuses_a_missing_split_cleanly(tmp_path):
    config = tmp_path / "e2e.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "split": str(tmp_path / "nope.jsonl"),
                "work_dir": str(tmp_path / "w"),
                "decomposers": [{"name": "g", "backend": "gold"}],
            }
        )
    )
    proc = _e2e(config)
    assert proc.returncode == 2 and "split not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None, reason="vLLM not installed")
def test_e2e_on_vllm_matches_the_executor_and_judges_with_vllm(tmp_path, tiny_model_dir, labelled_rows):
    """The vLLM batch backend gives the executor's greedy answers (fp32) on the same
    sub-prompts, and the vLLM judge's constrained pick is one of the three choices."""
    model = str(tiny_model_dir)
    config, _, _ = _config(
        tmp_path,
        labelled_rows,
        name="tiny-vllm",
        limit=4,
        decomposers=[{"name": "oracle", "backend": "gold"}],
        answer={
            "model": model,
            "serial_max_new_tokens": 10,
            "branch_max_new_tokens": 6,
            "max_model_len": 2048,
            "kv_cache_gib": 1,
        },
        judge={
            "model": model,
            "backend": "vllm",
            "max_chars": 300,
            "max_model_len": 2048,
            "kv_cache_gib": 1,
            "answers_from": "vllm",
        },
    )
    proc = _e2e(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = tmp_path / "work" / "answers"

    def rows(name, key):
        return {r[key]: r for r in map(json.loads, (answers / name).read_text().splitlines())}

    def texts(r):  # an answer cut by the budget mid-character: the two detokenizers may keep a U+FFFD or not
        return [t.rstrip("\ufffd") for t in r["texts"]]

    assert {k: texts(r) for k, r in rows("vllm.serial.jsonl", "id").items()} == {
        k: texts(r) for k, r in rows("executor.serial.jsonl", "id").items()
    }
    executor, vllm = rows("executor.parallel.jsonl", "key"), rows("vllm.parallel.jsonl", "key")
    greedy = [k for k, r in executor.items() if not r["sampled"]]

    def text(rows, k):  # vLLM holds back a trailing partial UTF-8 character; transformers decodes it as U+FFFD
        return [t.rstrip("\ufffd").rstrip() for t in rows[k]["texts"]]

    assert greedy and all(text(vllm, k) == text(executor, k) for k in greedy)
    verdicts = [json.loads(x) for x in (tmp_path / "work" / "judge.jsonl").read_text().splitlines()]
    assert verdicts and all(set(v["picks"]) <= {"A", "B", "tie"} for v in verdicts)
    assert all(abs(sum(p) - 1) < 1e-3 for v in verdicts for p in v["probs"])
    assert all(v["verdict"] in ("win", "tie", "loss") for v in verdicts)


def test_e2e_with_references_scores_answers_against_gold(tmp_path, tiny_model_dir):
    """A config with `references:` takes the reference set as its gold set and adds the
    reference-based tables and plot; the oracle's split answers and the rules' are scored."""
    model = str(tiny_model_dir)
    refs = tmp_path / "refs.jsonl"
    lines = (ROOT / "data" / "raw" / "reference" / "en.jsonl").read_text(encoding="utf-8").splitlines()
    refs.write_text("\n".join(lines[3:9]) + "\n", encoding="utf-8")  # translation .. sentiment: short prompts
    config = tmp_path / "e2e.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "ref",
                "split": str(tmp_path / "unused.jsonl"),
                "references": str(refs),
                "work_dir": str(tmp_path / "work"),
                "report_dir": str(tmp_path / "reports"),
                "decomposers": [{"name": "oracle", "backend": "gold"}, {"name": "rules", "backend": "rules"}],
                "engines": ["executor"],
                "answer": {"model": model, "serial_max_new_tokens": 8, "branch_max_new_tokens": 4},
                "judge": None,
            }
        )
    )
    proc = _e2e(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = (tmp_path / "reports").iterdir()
    res = json.loads((report / "results.json").read_text())
    ref = res["reference"]["oracle@executor"]
    assert ref["overall"]["prompts"] == 6 and ref["split"] == 6
    assert set(ref["by_category"]) == {
        "translation",
        "language_correction",
        "named_entity_recognition",
        "keyword_extraction",
        "sentiment_analysis",
    }
    for row in ref["prompts"]:
        assert all(0.0 <= s <= 1.0 for s in row["serial"] + row["parallel"])
    assert "rules@executor" in res["reference"]
    assert (report / "reference_retention.png").stat().st_size > 1000
    assert "## Reference-based quality (no judge)" in (report / "report.md").read_text()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0].replace('"references"', '"refs"') + "\n", encoding="utf-8")
    config.write_text(config.read_text().replace(str(refs), str(bad)))
    proc = _e2e(config)
    assert proc.returncode == 2 and "bad reference line" in proc.stderr and "Traceback" not in proc.stderr
