"""``gpcis demo``: option parsing and start-up, without serving for real."""

from __future__ import annotations

import flask
import pytest

from gpcis.cli import build_parser, main


def test_defaults_are_local_and_gp_pixel():
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.method, args.checkpoint, args.device) == ("127.0.0.1", 7860, None, None, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--method", "grabcut", "--checkpoint", "x.pt"])


def test_run_builds_app_and_serves_on_the_given_port(monkeypatch, capsys):
    served = {}

    def fake_run(self, host=None, port=None, **kwargs):
        served.update(host=host, port=port, app=self, **kwargs)

    monkeypatch.setattr(flask.Flask, "run", fake_run)
    assert main(["demo", "--method", "grabcut", "--port", "7999"]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 7999 and served["threaded"]
    out = capsys.readouterr().out
    assert "http://127.0.0.1:7999/" in out
    info = served["app"].test_client().get("/api/info").get_json()
    assert info["method"] == "grabcut" and info["error"] is None


def test_bad_options_are_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: None)
    assert main(["demo", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "--checkpoint: file not found" in capsys.readouterr().err
    assert main(["demo", "--max-side", "3"]) == 2
    # a checkpoint that does not load: the server still starts and the page shows the error
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["demo", "--checkpoint", str(bad)]) == 0
    assert "could not load the model" in capsys.readouterr().err
    # an unknown method is refused before serving (it was logged with a traceback, then served)
    served = []
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: served.append(kw))
    assert main(["demo", "--method", "bogus"]) == 2 and not served
    assert "--method 'bogus' is not a method; available:" in capsys.readouterr().err
    for port in ("70000", "-1"):  # werkzeug served 70000 on 4464 and crashed on -1
        with pytest.raises(SystemExit):
            main(["demo", "--port", port])
        assert "must be a port in 0..65535" in capsys.readouterr().err


def test_default_method_is_the_released_model_when_installed(released_tiny, monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: served.update(app=self))
    assert main(["demo", "--device", "cpu", "--max-side", "96"]) == 0
    described = f"released model gpcis_tiny ({released_tiny})"
    assert f"method: {described}" in capsys.readouterr().out
    info = served["app"].test_client().get("/api/info").get_json()
    assert info["method"] == described and info["error"] is None
    assert described in served["app"].test_client().get("/").get_data(as_text=True)


def test_default_method_without_released_weights_is_gp_pixel(released_tiny, monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: served.update(app=self))
    released_tiny.unlink()
    assert main(["demo"]) == 0
    assert "method: gp-pixel" in capsys.readouterr().out
    assert served["app"].test_client().get("/api/info").get_json()["method"] == "gp-pixel"
    assert main(["demo", "--device", "cpu"]) == 2  # no model to put on a device
    assert "--device, --refine and --flip only apply" in capsys.readouterr().err


def test_refine_and_flip_reach_the_demo_predictor(released_tiny, monkeypatch):
    """`gpcis demo --refine` serves predictors that post-process with GrabCut (the released
    tiny model stands in for the real one)."""
    from gpcis.baselines.refine import GrabCutRefineConfig
    import gpcis.demo.app as app_module

    seen = {}
    real = app_module.create_app

    def spy(factory, config):
        seen["predictor"] = factory()
        return real(factory, config)

    monkeypatch.setattr(app_module, "create_app", spy)
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: None)
    assert main(["demo", "--device", "cpu", "--refine", "--flip"]) == 0
    assert seen["predictor"].refine == GrabCutRefineConfig() and seen["predictor"].flip
    assert main(["demo", "--device", "cpu"]) == 0
    assert seen["predictor"].refine is None


def test_session_limits_and_max_side_zero_reach_the_app(monkeypatch, capsys):
    """--max-side 0 means never downscale (it was refused although documented); the session
    limits are options."""
    served = {}
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: served.update(app=self))
    assert main(["demo", "--method", "grabcut", "--max-side", "0", "--max-sessions", "3", "--idle-minutes", "0",
                 "--max-clicks", "50"]) == 0
    cfg = served["app"].extensions["gpcis_demo"]["config"]
    assert (cfg.max_side, cfg.max_sessions, cfg.idle_s, cfg.max_clicks) == (None, 3, None, 50)
    assert main(["demo", "--method", "grabcut", "--idle-minutes", "2"]) == 0
    assert served["app"].extensions["gpcis_demo"]["config"].idle_s == 120
    assert main(["demo", "--method", "grabcut", "--max-side", "8"]) == 2
    assert "--max-side must be 0 (never) or at least 16" in capsys.readouterr().err
    for bad in (["--max-sessions", "0"], ["--idle-minutes", "-1"], ["--max-clicks", "0"]):
        with pytest.raises(SystemExit):
            main(["demo", "--method", "grabcut", *bad])
