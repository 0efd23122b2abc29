"""What a user gets wrong when starting a server or a client (issue 18, items 4 and 5): a port
out of range or in use, a missing export or dataset, a bad model config, an unreachable TF
Serving, incomplete TLS flags. Each is a :class:`tfrrl.errors.UserError` (tfrrl_serving/errors.py)
with a one-line message saying what to do, raised before anything slow; the command line of the
local PredictionService prints it as one line with exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tfrrl.errors import UserError
from tfrrl_cli import main as cli
from tfrrl_serving import errors
from tfrrl_serving.matching import server as matching_server
from tfrrl_serving.tf_serving import start_server
from tfrrl_serving.transport import ClientTLS, check_port
from tests.conftest import REPO


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert isinstance(err, UserError) and message and "\n" not in message, repr(err)
    return message


def test_ports_out_of_range_are_refused_before_anything_is_loaded(tmp_path, capsys):
    # gRPC alone would listen on 99999 - 65536 = 34463, and on 65535 for -1.
    for port in (99999, -1, 65536):
        with pytest.raises(errors.PortError) as err:
            check_port(port)
        assert _one_line(err.value) == (f"--port {port} is out of range: give 0-65535 "
                                        "(0 = any free port)")
    assert [check_port(p) for p in (0, 1, 65535)] == [0, 1, 65535]
    missing = str(tmp_path / "missing")  # the port is refused before the export is read
    with pytest.raises(errors.PortError):
        matching_server.start_server(missing, port=99999)
    with pytest.raises(errors.PortError):
        start_server(missing, port=-1)
    # The command line prints the PortError as one line and exits 2 (tfrrl_cli.main).
    assert cli.main(["query", "--user", "u", "--domain", "d", "--port", "99999"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "--port 99999 is out of range" in err_lines[0]


def _listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_a_port_in_use_is_one_line_for_both_servers(tiny_indexed_export, tmp_path):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(errors.PortInUseError) as err:
            matching_server.start_server(tiny_indexed_export["base"], port=port,
                                         user_store=str(tmp_path / "users.sqlite"))
        assert _one_line(err.value) == (f"127.0.0.1:{port} is in use by another process: stop "
                                        "it, or pick another --port (0 = any free port)")
        with pytest.raises(errors.PortInUseError):
            start_server(tiny_indexed_export["base"], port=port)


def test_missing_export_data_bad_config_and_unreachable_tf_serving(tiny_indexed_export,
                                                                    tmp_path):
    base, data = tiny_indexed_export["base"], tiny_indexed_export["data_dir"]
    with pytest.raises(errors.ExportNotFoundError) as err:
        matching_server.start_server(str(tmp_path / "missing"), port=0)
    assert "does not exist" in _one_line(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.ExportNotFoundError) as err:
        matching_server.start_server(str(tmp_path / "empty"), port=0)
    assert "run `tfrrl export` and then `tfrrl index`" in _one_line(err.value)
    with pytest.raises(errors.DataNotFoundError) as err:
        matching_server.start_server(base, port=0, data_dir=str(tmp_path / "no-data"),
                                     user_store=str(tmp_path / "users.sqlite"))
    assert _one_line(err.value).startswith(f"--data {tmp_path / 'no-data'} does not exist")
    with pytest.raises(errors.DataNotFoundError) as err:  # a folder, but no snapshot
        matching_server.start_server(base, port=0, data_dir=str(tmp_path / "empty"),
                                     user_store=str(tmp_path / "users.sqlite"))
    assert "has no user snapshot" in _one_line(err.value)
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(errors.TFServingUnreachableError) as err:
        matching_server.start_server(base, port=0, tf_serving=nobody)
    assert _one_line(err.value).startswith(f"TF Serving at {nobody} does not answer")
    # The local PredictionService: a config that does not parse, a base path with no version.
    (tmp_path / "bad.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(errors.ModelConfigError) as err:
        start_server(model_config_file=str(tmp_path / "bad.config"), port=0)
    assert _one_line(err.value).startswith("bad model config:")
    with pytest.raises(errors.ExportNotFoundError) as err:
        start_server(str(tmp_path / "missing"), port=0)
    assert "export one with `tfrrl export`" in _one_line(err.value)
    with pytest.raises(errors.TLSConfigError):
        ClientTLS(cert_file="client.crt")  # a certificate without its key
    assert os.path.isdir(data)


def test_prediction_service_command_line_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for args, words in (
            (["--port", "99999", "--model_base_path", str(tmp_path)], "--port 99999 is out of"),
            (["--port", "0", "--model_base_path", str(tmp_path / "missing")],
             "no servable version of model(s)"),
            (["--port", "0", "--model_base_path", str(tmp_path), "--tls_cert", "x.crt"],
             "TLS needs both --tls_cert and --tls_key")):
        proc = subprocess.run([sys.executable, "-m", "tfrrl_serving.tf_serving", *args],
                              cwd=str(REPO), env=env, capture_output=True, text=True,
                              timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(lines) == 1 and words in lines[0], proc.stderr[-2000:]


@pytest.mark.parametrize("prior_shift,mode,ef,advised", [
    (True, "hnsw", None, True),      # shifted scores, the default beam: say it
    (True, "hnsw", 800, False),      # the operator chose a beam
    (True, "exhaustive", None, False),
    (False, "hnsw", None, False),    # no shift: the default beam is what was measured
])
def test_beam_advice_only_for_a_prior_shift_on_the_default_beam(prior_shift, mode, ef, advised):
    advice = matching_server.beam_advice(prior_shift, mode, ef)
    assert (advice is not None) == advised
    if advised:
        assert "--ef" in advice and "prior shift" in advice
