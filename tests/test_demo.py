"""`groupact demo`: the page's computations (every registered group's controls, every shipped model),
its HTTP server, and the page itself in a real headless Chromium (Debian's chromium and
chromium-driver, through selenium; skipped where they are not installed, failed instead when
GROUPACT_REQUIRE_BROWSER=1, as CI sets it).

The page must show what `groupact transform` writes: the test moves the page's slider to 90° and
compares the picture the page shows, pixel for pixel (PNG's 8 bits), with `transform --g 90`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from groupact.demo import DemoApp, controls_for, make_server, url_of
from groupact.demo.app import latent_panel, read_upload
from groupact.errors import DataError, GroupactError
from groupact.evaluate.figures import to_display
from groupact.groups import GROUPS, build_group
from groupact.runs import load_run
from groupact.transform import parse_element, transform_file

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
SHIPPED = sorted(p.name for p in PRETRAINED.iterdir() if (p / "config.yaml").is_file())


def decode(data_url: str) -> np.ndarray:
    """A PNG data URL as a float array in [0, 1] ((h, w) grey or (h, w, 3))."""
    from PIL import Image
    head, _, body = data_url.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body)))).astype(np.float32) / 255


def blobs(shape: tuple[int, ...], n: int = 3, seed: int = 0) -> torch.Tensor:
    """n smooth off-centre blobs of the model's input shape (turns of them are visible)."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape[1:]], indexing="ij")
    out = []
    for _ in range(n):
        c = torch.rand(len(axes), generator=g) * 0.8 - 0.4
        r2 = sum((a - ci) ** 2 for a, ci in zip(axes, c))
        out.append(torch.exp(-r2 / 0.15).expand(shape).clone())
    return torch.stack(out)


def default_text(controls: dict) -> str | None:
    if controls["kind"] != "sliders":
        return None
    return controls["format"].format(**{s["name"]: s["value"] for s in controls["sliders"]})


# --- the computations ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_registered_group_gets_controls_that_parse(name):
    group = build_group(name)
    c = controls_for(group)
    if c["kind"] == "sliders":
        for s in c["sliders"]:
            assert s["min"] <= s["value"] <= s["max"] and s["step"] > 0
        assert c["play"] in {s["name"] for s in c["sliders"]}
        assert torch.equal(parse_element(group, default_text(c)), parse_element(group,
                                                                               default_text(c)))
        # the slider ends parse too (the page may send any value in range)
        ends = {s["name"]: s["max"] for s in c["sliders"]}
        if name == "so3":
            ends.update(ad=1, ah=0, aw=0)
        parse_element(group, c["format"].format(**ends))
    elif c["kind"] == "elements":
        assert c["labels"] == group.describe(group.elements())
    else:
        pytest.fail(f"group {name} gets a text box: give it controls")


@pytest.mark.parametrize("run_name", SHIPPED)
def test_every_shipped_model_renders_what_transform_computes(run_name):
    run = load_run(PRETRAINED / run_name)
    x = blobs(run.input_shape)
    app = DemoApp(run, x)
    info = app.info()
    assert len(info["examples"]) == 3 and info["volume"] == (len(run.input_shape) == 4)
    c = info["controls"]
    request = {"example": 1, "swap": 2}
    if c["kind"] == "elements":
        request["element"] = 1
        g = app.group.elements()[1:2]
    else:
        values = {s["name"]: s["value"] for s in c["sliders"]}
        values[c["play"]] = c["sliders"][[s["name"] for s in c["sliders"]].index(c["play"])]["max"] / 4
        request["g"] = c["format"].format(**values)
        g = parse_element(app.group, request["g"])
    answer = app.render(request)
    want = to_display(run.model.transform(x[1:2], g).clamp(0, 1))[0]
    k = answer["output"]["scale"]
    shown = decode(answer["output"]["slices"])[::k, ::k]
    assert shown.shape == want.shape
    assert np.abs(shown - want).max() <= 0.5 / 255 + 1e-6         # PNG's rounding only
    assert ("view3d" in answer["output"]) == info["volume"]
    assert answer["swap"]["result"]["slices"].startswith("data:image/png")
    if info["has_truth"]:
        truth = decode(answer["truth"]["slices"])[::k, ::k]
        assert np.abs(truth - to_display(app.group.act_image(x[1:2], g).clamp(0, 1))[0]).max() \
            <= 0.5 / 255 + 1e-6
        assert answer["psnr"] is not None


def test_the_swap_takes_z_v_from_x_and_z_i_from_the_other(tmp_path):
    run = load_run(PRETRAINED / "blocked")
    x = blobs(run.input_shape)
    app = DemoApp(run, x)
    answer = app.render({"example": 0, "element": 0, "swap": 2})
    m = run.model
    z0, z2 = m.encode(x[0:1]), m.encode(x[2:3])
    want = m.decode(m.mask_like(z0) * z0 + (1 - m.mask_like(z0)) * z2)
    k = answer["swap"]["result"]["scale"]
    assert np.abs(decode(answer["swap"]["result"]["slices"])[::k, ::k]
                  - to_display(want.clamp(0, 1))[0]).max() <= 0.5 / 255 + 1e-6


def test_blocked_mnist_targets_keep_the_block_in_place():
    """T_g x on the page is what the data pairs x with: the digit turned, its block kept."""
    app = DemoApp.from_run_dir(PRETRAINED / "blocked", log=lambda *_: None)
    x = app.examples[:, 0]
    # examples with a block: a 7×7 window of ones (a pen stroke never fills one)
    full = torch.nn.functional.avg_pool2d((x == 1).float()[:, None], 7, 1)[:, 0] == 1
    k = int(full.flatten(1).any(1).nonzero()[0])
    top, left = divmod(int(full[k].flatten().nonzero()[0]), full.shape[-1])
    answer = app.render({"example": k, "element": 1})
    scale = answer["truth"]["scale"]
    truth = decode(answer["truth"]["slices"])[::scale, ::scale]
    assert app.occluded and np.abs(truth - app.targets(k, app.group.elements()[1:2])[0, 0]
                                   .numpy()).max() <= 0.5 / 255 + 1e-6
    assert (truth[top:top + 7, left:left + 7] == 1).all()        # the block did not turn
    assert not np.allclose(truth, x[k].numpy())                   # the digit did
    assert answer["psnr"] > 20                                    # and the model keeps it too
    # an upload's block is unknown: no T_g x, and the page says why
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((x[k].numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
    up = app.render({"upload": "data:image/png;base64," + base64.b64encode(buf.getvalue())
                     .decode(), "element": 1})
    assert up["truth"] is None and "block" in up["truth_note"]


def test_bad_requests_are_one_line_errors():
    run = load_run(PRETRAINED / "rotmnist-so2")
    app = DemoApp(run, blobs(run.input_shape))
    with pytest.raises(GroupactError, match="group 'so2' takes an angle in degrees"):
        app.render({"example": 0, "g": "ninety"})
    with pytest.raises(GroupactError, match="finite"):
        app.render({"example": 0, "g": "nan"})
    with pytest.raises(GroupactError, match="there is no example 7"):
        app.render({"example": 7, "g": "0"})
    with pytest.raises(DataError, match="must be an image"):
        app.render({"upload": "hello", "g": "0"})
    with pytest.raises(DataError, match="cannot read the upload"):
        app.render({"upload": "data:image/png;base64,AAAA", "g": "0"})
    cube = DemoApp(load_run(PRETRAINED / "rotmnist"), blobs((1, 28, 28)))
    with pytest.raises(GroupactError, match="element 4 is not an index"):
        cube.render({"example": 0, "element": 4})


def test_an_upload_or_drawing_is_converted_to_the_models_input():
    from PIL import Image
    canvas = np.zeros((168, 168), np.uint8)
    canvas[40:130, 80:90] = 255                               # a drawn "1"
    buf = io.BytesIO()
    Image.fromarray(canvas).convert("RGB").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    x = read_upload(url, (1, 28, 28))
    assert x.shape == (1, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float(x[0, 0, 14, 14]) > 0.5 and float(x[0, 0, 14, 3]) == 0.0
    assert read_upload(url, (3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(DataError, match="volumes"):
        read_upload(url, (1, 32, 32, 32))


def test_latent_panel_colours_channels_by_the_mask():
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    spatial = latent_panel(torch.rand(4, 7, 7), mask)
    vector = latent_panel(torch.rand(4, 3), mask)
    for pic in (spatial, vector):
        assert pic.ndim == 3 and pic.shape[2] == 3
        top_left = pic[1, 1]                                  # the first tile's border
        assert np.allclose(top_left, (0.84, 0.15, 0.16))      # channel 0 is variant: red
    assert latent_panel(torch.rand(2, 6, 6, 6), torch.tensor([0.0, 1.0])).ndim == 3  # volume


# --- the server ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    """The shipped SO(2) model on the first MNIST test digits, served on a free port."""
    app = DemoApp.from_run_dir(PRETRAINED / "rotmnist-so2", log=lambda *_: None)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, url_of(server)
    server.shutdown()
    server.server_close()


def api_url(url: str, path: str) -> str:
    """``path`` on the server whose printed address (with its token) is ``url``."""
    base, _, query = url.partition("?")
    return f"{base}{path}?{query}"


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(api_url(url, "api/render"), data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_serves_the_page_its_info_and_answers(served):
    app, url = served
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200 and b"groupact demo" in r.read()
    with urllib.request.urlopen(api_url(url, "api/info"), timeout=30) as r:
        info = json.loads(r.read())
    assert info["group"] == "so2" and len(info["examples"]) == 16
    status, answer = _post(url, json.dumps({"example": 2, "g": "45"}).encode())
    assert status == 200 and answer["g"] == "45°"
    status, answer = _post(url, b"[1, 2]")
    assert status == 400 and "JSON object" in answer["error"]
    status, answer = _post(url, json.dumps({"example": 0, "g": "x"}).encode())
    assert status == 400 and "takes an angle in degrees" in answer["error"]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(api_url(url, "nowhere"), timeout=30)


def test_a_busy_port_is_a_one_line_error(served):
    _, url = served
    port = urllib.parse.urlsplit(url).port
    with pytest.raises(GroupactError, match="cannot listen on 127.0.0.1:.*another --port"):
        make_server(served[0], "127.0.0.1", port)


def test_cli_refuses_a_bad_port_and_a_missing_run(tmp_path, capsys):
    from groupact.cli import main
    assert main(["demo", str(PRETRAINED / "rotmnist"), "--port", "70000"]) == 2
    assert "--port takes 0 to 65535" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("groupact: error:")


# --- the page in a real browser ------------------------------------------------------------
def _browser():
    """A headless Chromium through selenium and Debian's chromedriver, or a skip/fail reason."""
    need = os.environ.get("GROUPACT_REQUIRE_BROWSER") == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not (chromium and driver_bin and webdriver):
        why = ("needs Debian's chromium and chromium-driver (apt-get install chromium "
               "chromium-driver) and selenium")
        if need:
            pytest.fail(why)
        pytest.skip(why)
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


def _wait(driver, condition, what: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page did not {what} in {timeout:.0f} s; its error line: "
                         + str(driver.execute_script("return document.getElementById('error')"
                                                     ".textContent")))


def _serial(driver) -> int:
    return int(driver.execute_script(
        "return document.getElementById('output-img').dataset.serial"))


def test_page_in_headless_chromium_moves_g_and_matches_transform(served, tmp_path):
    app, url = served
    driver = _browser()
    try:
        driver.get(url)
        _wait(driver, "return Number(document.getElementById('output-img').dataset.serial) >= 1",
              "show its first answer")
        before = driver.execute_script("return document.getElementById('output-img').src")
        n = _serial(driver)
        driver.execute_script("const s = document.getElementById('ctl-angle'); s.value = 90; "
                              "s.dispatchEvent(new Event('input'));")
        _wait(driver, f"const o = document.getElementById('output-img'); "
                      f"return Number(o.dataset.serial) > {n} && o.dataset.g === '90°'",
              "answer the slider at 90°")
        after = driver.execute_script("return document.getElementById('output-img').src")
        scale = int(driver.execute_script(
            "return document.getElementById('output-img').dataset.scale"))
        assert after != before                                  # the picture changed
        # the same digit through `groupact transform --g 90`
        npy = tmp_path / "digit.npy"
        np.save(npy, app.examples[0].numpy())
        transform_file(PRETRAINED / "rotmnist-so2", npy, tmp_path / "out.npy", g="90")
        want = np.clip(np.load(tmp_path / "out.npy")[0], 0, 1)
        shown = decode(after)[::scale, ::scale]
        assert shown.shape == want.shape
        assert np.abs(shown - want).max() <= 0.5 / 255 + 1e-6
        truth = decode(driver.execute_script(
            "return document.getElementById('truth-img').src"))[::scale, ::scale]
        assert np.abs(truth - to_display(app.group.act_image(
            app.examples[0:1], parse_element(app.group, "90")))[0]).max() <= 0.5 / 255 + 1e-6
        # another example, the swap, then the orbit player advances by itself
        driver.execute_script("document.querySelectorAll('#examples img')[3].click()")
        n = _serial(driver)
        driver.execute_script("const s = document.getElementById('swap-select'); s.value = '5'; "
                              "s.dispatchEvent(new Event('change'));")
        _wait(driver, f"return Number(document.getElementById('output-img').dataset.serial) > {n}"
                      " && !!document.getElementById('swap-img').getAttribute('src')",
              "show the swap")
        n = _serial(driver)
        driver.find_element("id", "play").click()
        _wait(driver, f"return Number(document.getElementById('output-img').dataset.serial) "
                      f">= {n + 3}", "play three frames of the orbit")
        driver.find_element("id", "play").click()
        assert driver.execute_script("return document.getElementById('error').textContent") == ""
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("GROUPACT_DEMO_SCREENSHOT"):          # docs/figures/demo.png
            shutil.copy(shot, os.environ["GROUPACT_DEMO_SCREENSHOT"])
    finally:
        driver.quit()
