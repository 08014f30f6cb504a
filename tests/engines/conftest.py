"""The sweep as users run it: the toy audit that the engine tests share

The toy audit: the memorizing toy model (one image 60 times among 5 singletons), its 6 training
captions and 6 it never saw, 6 samples each, shards of 2 captions, the clique test on every caption.
"""

from __future__ import annotations

import pytest

from helpers import CAPTIONS, once, run, write_config


@pytest.fixture(scope="session")
def evidence_run(tmp_path_factory, memorizing_model):
    """The toy audit on the local engine with --keep evidence: the model's 6 training captions and
    6 captions it never saw (most captions of a real sweep are not memorized). Made once per test run."""
    model, cfg = memorizing_model

    def sweep(folder):
        import pandas as pd

        from imgextract.demo.toy import training_set
        _, held = training_set(cfg)
        trained = pd.read_csv(model / "train" / "copies.csv")
        unseen = pd.DataFrame({"caption": [h.caption for h in held[:CAPTIONS - len(trained)]]})
        pd.concat([trained, unseen], ignore_index=True).to_csv(folder / "captions.csv", index=False)
        code, out, err = run("run", write_config(folder, model, "evidence"), "--keep", "evidence", cwd=folder,
                             timeout=600)
        assert code == 0, err
    folder = once(tmp_path_factory, "sweep", sweep)
    return folder, model, folder / "evidence"


@pytest.fixture(scope="session")
def all_run(tmp_path_factory, evidence_run):
    """The same audit on the local engine with --keep all: every PNG on disk."""
    folder, model, _ = evidence_run

    def keep_all(_):
        code, out, err = run("run", write_config(folder, model, "all"), "--keep", "all", cwd=folder, timeout=600)
        assert code == 0, err
    once(tmp_path_factory, "sweep-all", keep_all)
    return folder / "all"
