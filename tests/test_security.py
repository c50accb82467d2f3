"""Ways in, closed: a run folder does not run its own code without consent, the demo page answers
only its own page (Host, Origin, token) and every malformed request with a JSON 4xx, plan names
stay names inside --out, and mesh/IDX headers cannot make a reader hang or read outside its
folder.

Each refusal is checked as a user meets it: exit 2, one `groupact: error:` line, no traceback,
and nothing written (the file tree compared before and after).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from groupact.cli import main
from groupact.demo import DemoApp, make_server, url_of
from groupact.errors import GroupactError
from groupact.runs import load_run

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

#: a user's net file whose import and factory each leave a marker file (so a test sees whether
#: the code ran at all)
USER_NET = '''
from pathlib import Path
from torch import nn

MARKER = Path({marker!r})
MARKER.write_text("imported")

def make_pair(spec):
    MARKER.write_text("built")
    c = spec.channels
    return (nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, c, 4, 2, 1)),
            nn.Sequential(nn.ConvTranspose2d(c, 8, 4, 2, 1), nn.ReLU(),
                          nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Sigmoid()))

def takes_nothing():
    return None

class NotAFactory:
    def __init__(self, spec):
        pass
'''

TINY = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "train.batch_size=32",
        "train.epochs=1", "train.progress=false", "eval.figures=false", "model.channels=4"]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256 (the state a refusal must leave alone)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys, argv: list[str], needle: str = "") -> str:
    """Run the CLI; it must exit 2 with one `groupact: error:` line containing ``needle``."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and err[0].startswith("groupact: error:"), err
    assert needle in err[0], err
    return err[0]


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


# --- a run folder's own code ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A tiny run trained with a user's net file (absolute path recorded), and its marker."""
    root = tmp_path_factory.mktemp("usernet")
    marker = root / "MARKER"
    net = root / "evil.py"
    net.write_text(USER_NET.format(marker=str(marker)))
    run = root / "run"
    assert main(["train", "rotmnist-c4", "--run-dir", str(run), "--no-eval",
                 *sets(TINY + [f"model.net={net}:make_pair"])]) == 0
    marker.unlink()
    np.save(root / "digit.npy", np.zeros((28, 28), np.float32))
    np.save(root / "digits.npy", np.zeros((2, 28, 28), np.float32))
    return root, run, net, marker


def test_every_command_that_loads_a_run_refuses_its_code_without_trust(user_run, capsys):
    root, run, net, marker = user_run
    before = tree(root)
    for argv in (["transform", str(run), "--input", str(root / "digit.npy"), "--g", "90",
                  "--output", str(root / "t.npy")],
                 ["features", str(run), "--input", str(root / "digit.npy"),
                  "--output", str(root / "f.npy")],
                 ["align", str(run), "--input", str(root / "digit.npy"), "--target",
                  str(root / "digit.npy"), "--output", str(root / "a.npy")],
                 ["export", str(run), str(root / "shared")],
                 ["evaluate", str(run), "--no-figures", "--no-probes"],
                 ["demo", str(run), "--port", "0"],
                 ["train", "--resume", "--run-dir", str(run), "--set", "train.epochs=2"]):
        line = refused(capsys, argv, "--trust-code")
        assert str(net) in line and "model.net" in line, line
        assert not marker.exists(), argv            # the file was never imported
        assert tree(root) == before, argv            # and nothing was written
    with pytest.raises(GroupactError, match="trust_code=True"):
        load_run(run)
    assert not marker.exists()


def test_trusted_code_loads(user_run, capsys):
    root, run, _net, marker = user_run
    assert main(["transform", str(run), "--input", str(root / "digit.npy"), "--g", "90",
                 "--output", str(root / "t.npy"), "--trust-code"]) == 0
    assert marker.read_text() == "built"
    assert np.load(root / "t.npy").shape == (1, 28, 28)
    assert load_run(run, trust_code=True).cfg.model.net.endswith("evil.py:make_pair")
    assert DemoApp.from_run_dir(run, root / "digits.npy", trust_code=True).examples.shape[0] == 2
    assert main(["export", str(run), str(root / "shared"), "--trust-code"]) == 0
    marker.unlink()
    # the exported copy names the same code, so it asks again
    refused(capsys, ["evaluate", str(root / "shared"), "--no-figures", "--no-probes"],
            "--trust-code")
    assert not marker.exists()
    assert main(["evaluate", str(root / "shared"), "--out", str(root / "e"), "--no-figures",
                 "--no-probes", "--trust-code"]) == 0


def test_resume_needs_no_flag_when_the_command_line_names_the_same_net(user_run, capsys):
    root, run, net, _marker = user_run
    other = root / "other.py"
    other.write_text(net.read_text())
    refused(capsys, ["train", "--resume", "--run-dir", str(run), "--no-eval",
                     "--set", f"model.net={other}:make_pair"], "--trust-code")
    assert main(["train", "--resume", "--run-dir", str(run), "--no-eval",
                 "--set", f"model.net={net}:make_pair", "--set", "train.epochs=2"]) == 0


def test_a_net_name_must_be_a_net_factory_of_the_users_own_code(user_run, tmp_path, capsys):
    _root, _run, net, _marker = user_run
    for name, needle in (("os:getcwd", "standard-library module"),
                         ("antigravity:fly", "standard-library module"),
                         ("os.path:join", "standard-library module"),
                         (f"{net}:takes_nothing", "must take one argument"),
                         (f"{net}:NotAFactory", "not a net factory"),
                         (f"{net}:Path", "not a net factory")):
        refused(capsys, ["train", "rotmnist-c4", "--run-dir", str(tmp_path / "r"),
                         *sets(TINY + [f"model.net={name}"])], needle)
        assert not (tmp_path / "r").exists()


# --- the demo server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    """The shipped SO(2) model on three blank examples, served on a free port."""
    run = load_run(PRETRAINED / "rotmnist-so2")
    import torch
    app = DemoApp(run, torch.zeros(3, 1, 28, 28))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def http(server, method: str, path: str, body: bytes = b"", headers: dict | None = None,
         raw_headers: list[str] | None = None, token: bool = True) -> tuple[int, dict | bytes]:
    """One request over a raw socket (so headers can be anything); (status, JSON or bytes)."""
    port = server.server_address[1]
    if token:
        path += ("&" if "?" in path else "?") + f"token={server.token}"
    head = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
            **({"Content-Length": str(len(body))} if method == "POST" else {}),
            **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items() if v is not None]
    data = ("\r\n".join(lines + (raw_headers or [])) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head_text, _, payload = reply.partition(b"\r\n\r\n")
    status = int(head_text.split()[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def good(server) -> None:
    """The server still answers a proper request."""
    status, answer = http(server, "POST", "/api/render", json.dumps({"example": 1,
                                                                     "g": "45"}).encode())
    assert status == 200 and answer["g"] == "45°", answer


def bomb_png(side: int = 100_000) -> str:
    """A real 1×1 PNG whose header claims side×side pixels, as a data URL."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = png[12:29]                                 # 'IHDR' + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", side, side)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return "data:image/png;base64," + base64.b64encode(bytes(png)).decode()


def test_the_demo_serves_its_own_page_with_the_token(served):
    assert "?token=" in url_of(served) and len(served.token) >= 24
    status, page = http(served, "GET", "/", token=False)
    assert status == 200 and b"groupact demo" in page
    status, info = http(served, "GET", "/api/info")
    assert status == 200 and info["group"] == "so2"
    port = served.server_address[1]
    for host in (f"localhost:{port}", f"[::1]:{port}"):
        assert http(served, "GET", "/api/info", headers={"Host": host})[0] == 200
    status, info = http(served, "GET", "/api/info", token=False,
                        headers={"X-Groupact-Token": served.token})
    assert status == 200
    good(served)


def test_the_demo_refuses_other_sites_and_requests_without_its_token(served):
    port = served.server_address[1]
    for headers in ({"Host": f"evil.example:{port}"}, {"Host": "evil.example"},
                    {"Host": "127.0.0.1"}, {"Host": f"127.0.0.1:{port + 1}"}, {"Host": None},
                    {"Host": f"user@127.0.0.1:{port}"}):
        for path in ("/", "/api/info"):
            status, answer = http(served, "GET", path, headers=headers)
            assert status == 403 and "Host" in answer["error"], (headers, answer)
    status, answer = http(served, "GET", "/api/info", token=False)
    assert status == 403 and "token" in answer["error"]
    status, answer = http(served, "GET", "/api/info?token=wrong", token=False)
    assert status == 403 and "token" in answer["error"]
    body = json.dumps({"example": 0, "g": "10"}).encode()
    assert http(served, "POST", "/api/render", body, token=False)[0] == 403
    # a page elsewhere: its cross-site form/fetch carries its own Origin
    for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://127.0.0.1:{port + 1}"}):
        status, answer = http(served, "POST", "/api/render", body, headers=headers)
        assert status in (403, 415) and "error" in answer, (headers, answer)
    status, answer = http(served, "POST", "/api/render", body,
                          headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in answer["error"]
    status, _ = http(served, "POST", "/api/render", body,
                     headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200                                  # the page's own origin
    good(served)


BAD_BODIES = [
    (b"{", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe", "not a JSON object"),
    (b'{"example": 0, "g": Infinity}', "not a JSON object"),
    (b'{"example": NaN, "g": "0"}', "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nests too deeply"),
    (b'{"example": "0", "g": "0"}', "whole number"),
    (b'{"example": 1.5, "g": "0"}', "whole number"),
    (b'{"example": true, "g": "0"}', "whole number"),
    (b'{"example": -1, "g": "0"}', "no example -1"),
    (b'{"example": 99, "g": "0"}', "no example 99"),
    (b'{"example": 1e400, "g": "0"}', "whole number"),
    (b'{"example": 0, "g": 45}', "must be text"),
    (b'{"example": 0, "g": ["45"]}', "must be text"),
    (b'{"example": 0, "g": "1e300"}', "slider goes from 0 to 360"),
    (b'{"example": 0, "g": "-5"}', "slider goes from 0 to 360"),
    (b'{"example": 0, "g": "inf"}', "finite"),
    (b'{"example": 0, "g": "nan"}', "finite"),
    (b'{"example": 0, "g": "' + b"9" * 500 + b'"}', "characters long"),
    (b'{"example": 0, "g": "0", "swap": 0.5}', "whole number"),
    (b'{"example": 0, "element": 1.5}', "whole number"),
    (b'{"example": 0, "element": 3}', "not an index"),
    (b'{"example": 0, "g": "0", "upload": 5}', "must be text"),
    (b'{"example": 0, "g": "0", "upload": "data:image/png;base64,!!"}', "cannot read"),
    (b'{"example": 0, "g": "0", "rm -rf": 1}', "unknown request key"),
]


@pytest.mark.parametrize("body,needle", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_a_malformed_request_is_a_4xx_and_the_server_keeps_serving(served, body, needle):
    t0 = time.perf_counter()
    status, answer = http(served, "POST", "/api/render", body)
    assert 400 <= status < 500 and needle in answer["error"], answer
    assert "\n" not in answer["error"] and time.perf_counter() - t0 < 30
    good(served)


def test_a_decompression_bomb_upload_is_refused(served):
    body = json.dumps({"upload": bomb_png(), "g": "0"}).encode()
    status, answer = http(served, "POST", "/api/render", body)
    assert status == 400 and ("too large" in answer["error"] or "pixels" in answer["error"])
    body = json.dumps({"upload": bomb_png(5000), "g": "0"}).encode()   # under PIL's own limit
    status, answer = http(served, "POST", "/api/render", body)
    assert status == 400 and "5000×5000 pixels" in answer["error"], answer
    good(served)


@pytest.mark.parametrize("length,code", [("abc", 400), ("-5", 400), ("1e3", 400), ("", 400),
                                         ("99999999999999999999", 413), (str(64 << 20), 413)])
def test_a_lying_content_length_is_refused_before_the_body_is_read(served, length, code):
    status, answer = http(served, "POST", "/api/render", b"{}", headers={"Content-Length": None},
                          raw_headers=[f"Content-Length: {length}"])
    assert status == code and "error" in answer, answer
    good(served)


def test_missing_duplicate_or_chunked_lengths_are_refused(served):
    assert http(served, "POST", "/api/render", b"{}", headers={"Content-Length": None})[0] == 411
    assert http(served, "POST", "/api/render", b"{}", headers={"Content-Length": None},
                raw_headers=["Content-Length: 2", "Content-Length: 5"])[0] == 400
    assert http(served, "POST", "/api/render", b"2\r\n{}\r\n0\r\n\r\n",
                headers={"Content-Length": None},
                raw_headers=["Transfer-Encoding: chunked"])[0] == 411
    good(served)


def test_a_client_that_hangs_up_mid_request_leaves_no_traceback(served, capfd):
    port = served.server_address[1]
    head = (f"POST /api/render?token={served.token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n").encode()
    for sent in (head, head + b'{"exa', b"POST /api/ren"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(sent)
    # a client that leaves before its (large) answer is written
    body = json.dumps({"example": 0, "g": "30", "swap": 1}).encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(head.replace(b"5000", str(len(body)).encode()) + body)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)
    good(served)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_foreign_host_is_refused_even_through_the_cli_url(served):
    port = served.server_address[1]
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends its own Host
    status, answer = http(served, "GET", "/api/info", headers={"Host": f"rebind.evil:{port}"})
    assert status == 403


def test_demo_cli_warns_when_it_serves_beyond_this_machine():
    from groupact.demo import is_loopback
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_wildcard_host_still_needs_the_token():
    run = load_run(PRETRAINED / "rotmnist-so2")
    import torch
    server = make_server(DemoApp(run, torch.zeros(1, 1, 28, 28)), "0.0.0.0", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert url_of(server).startswith(f"http://127.0.0.1:{port}/?token=")
        assert http(server, "GET", "/api/info", token=False,
                    headers={"Host": f"my-box.lan:{port}"})[0] == 403
        assert http(server, "GET", "/api/info", headers={"Host": f"my-box.lan:{port}"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()


# --- names that become paths ---------------------------------------------------------------------
PLAN = """
datasets:
  {dataset}: rotmnist-c4
methods:
  {method}:
    overrides: [model.channels=4]
budgets:
  {budget}:
    seeds: 1
    all: [train.epochs=1, data.n_train=64, data.n_val=32, data.n_test=32]
"""


@pytest.mark.parametrize("names", [{"dataset": "../escape"}, {"dataset": "/tmp/abs"},
                                   {"method": "../../up"}, {"method": "a/b"},
                                   {"budget": "../b"}, {"dataset": ".hidden"},
                                   {"method": "x" * 65}])
def test_a_plan_with_path_like_names_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                           names):
    values = {"dataset": "digits", "method": "ald", "budget": "tiny", **names}
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(**{k: json.dumps(v) for k, v in values.items()}))
    before = tree(tmp_path)
    refused(capsys, ["reproduce", "--plan", str(plan), "--out", str(tmp_path / "out"),
                     "--budget", values["budget"], "--no-ablations"], "not a usable name")
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_plan_writes_only_inside_out_and_only_into_its_own_runs(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(dataset="digits", method="ald", budget="tiny"))
    out = tmp_path / "out"
    args = ["reproduce", "--plan", str(plan), "--out", str(out), "--budget", "tiny",
            "--no-ablations"]
    # a run folder there that holds someone else's files: left byte for byte
    run = out / "runs" / "digits" / "ald" / "seed0"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    before = tree(run)
    refused(capsys, args, "groupact did not write")
    assert tree(run) == before
    # a symbolic link inside --out that leads elsewhere
    (run / "notes.txt").unlink()
    for p in (run, run.parent, run.parent.parent, out / "runs"):
        p.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "runs").symlink_to(elsewhere)
    refused(capsys, args, "outside --out")
    assert list(elsewhere.iterdir()) == []


def test_recipe_and_run_names_are_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["info", "../reproduce/plan"], "unknown recipe")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: ../../escape\ndata: {kind: mnist5k}\n")
    before = tree(tmp_path)
    refused(capsys, ["train", str(recipe), *sets(TINY)], "not a usable name")
    assert tree(tmp_path) == before and not (tmp_path / "runs").exists()


# --- bounded readers -----------------------------------------------------------------------------
AC_MODEL = """AC3Db
MATERIAL "white" rgb 1 1 1  amb 0.2 0.2 0.2  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0
OBJECT world
kids 1
OBJECT poly
name "body"
texture "{texture}"
numvert 3
0 0 0
1 0 0
0 1 0
numsurf {numsurf}
SURF 0x10
mat 0
refs 3
0 0 0
1 1 0
2 0 1
kids 0
"""


def _model(folder: Path, texture: str = "tex.png", numsurf: str = "1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plane.ac"
    path.write_text(AC_MODEL.format(texture=texture, numsurf=numsurf))
    return path


def test_an_ac3d_texture_outside_the_models_folder_is_refused(tmp_path):
    from PIL import Image
    from groupact.data.ac3d import find_texture, load_texture_atlas, read_ac
    from groupact.errors import DataError
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(secret)
    aircraft = tmp_path / "deep" / "A320"
    Image.fromarray(np.full((4, 4, 3), 100, np.uint8)).save(_model(aircraft / "Models").parent
                                                              .parent / "livery.png")
    for name in ("../../../secret.png", "../../../../" + str(secret).lstrip("/"),
                 "..\\..\\..\\secret.png"):
        model = _model(aircraft / "Models", texture=name)
        with pytest.raises(DataError, match="outside the model's folder"):
            load_texture_atlas(model, read_ac(model).textures, 4)
    # an absolute name is looked up inside the model's tree, never at that path
    model = _model(aircraft / "Models", texture=str(secret))
    atlas, found = load_texture_atlas(model, read_ac(model).textures, 4)
    assert not bool(found[0])
    # '..' that stays inside the aircraft's folder is fine (FlightGear's ../Textures/…)
    assert find_texture(model, "../livery.png") == aircraft / "Models" / ".." / "livery.png"


@pytest.mark.parametrize("count", ["1000000000", "99999999999999999999", "-1", "x"])
def test_an_ac3d_header_count_beyond_the_file_is_refused_at_once(tmp_path, count):
    from groupact.data.ac3d import read_ac
    from groupact.errors import DataError
    for text in (AC_MODEL.format(texture="t.png", numsurf=count),
                 AC_MODEL.format(texture="t.png", numsurf="1").replace("numvert 3",
                                                                       f"numvert {count}"),
                 AC_MODEL.format(texture="t.png", numsurf="1").replace("refs 3", f"refs {count}"),
                 AC_MODEL.format(texture="t.png", numsurf="1").replace("kids 1", f"kids {count}")):
        path = tmp_path / "bomb.ac"
        path.write_text(text)
        t0 = time.perf_counter()
        with pytest.raises(DataError):
            read_ac(path)
        assert time.perf_counter() - t0 < 5          # well under a second on a quiet machine


def test_deeply_nested_ac3d_objects_are_refused(tmp_path):
    from groupact.data.ac3d import read_ac
    from groupact.errors import DataError
    path = tmp_path / "deep.ac"
    path.write_text("AC3Db\n" + "OBJECT group\nkids 1\n" * 5000 + "OBJECT poly\nkids 0\n")
    with pytest.raises(DataError, match="nest deeper"):
        read_ac(path)


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_count_beyond_the_file_is_refused_before_reading(tmp_path, gz):
    import gzip
    from groupact.data.mnist import read_idx
    from groupact.errors import DataError
    header = bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 100000, 100000)
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(header + b"\0" * 100) if gz else header + b"\0" * 100)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="header says"):
        read_idx(path)
    assert time.perf_counter() - t0 < 5
