"""`python -m traces stats|download`."""

import pytest

from traces.cli import main
from traces.sources import SOURCES, Source


def test_stats_prints_the_table(capsys):
    assert main(["stats", "azure_code"]) == 0
    out = capsys.readouterr().out
    assert "8,819 requests" in out and "2047.85 ± 1973.88" in out and "27.88 ± 59.86" in out


def test_stats_of_a_file_with_model_filter(capsys, fixtures):
    assert main(["stats", str(fixtures / "burstgpt_head.csv"), "--model", "GPT-4"]) == 0
    assert "2 requests" in capsys.readouterr().out


def test_download_shipped_and_offline(capsys, tmp_path, monkeypatch):
    assert main(["download", "azure_chat"]) == 0
    assert "shipped with the package" in capsys.readouterr().out
    gone = (tmp_path / "gone.csv").as_uri()
    monkeypatch.setitem(SOURCES, "burstgpt_2", Source("burstgpt_2", "BurstGPT_2.csv", "t", urls=(gone,)))
    assert main(["download", "burstgpt", "--file", "2", "--cache-dir", str(tmp_path)]) == 1
    assert f"put it at {tmp_path / 'BurstGPT_2.csv'}" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["stats"], ["download", "synthetic"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        main(argv)
