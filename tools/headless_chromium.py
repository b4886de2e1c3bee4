"""Open a page in headless Chromium over the DevTools protocol, with nothing but the stdlib.

Chromium's ``--remote-debugging-pipe`` reads protocol commands from fd 3 and writes replies
and events to fd 4, as JSON messages ended by a NUL byte. That avoids a websocket client,
a debugging port, and playwright's browser downloads. Used by tests/test_report_html.py
(console errors of the report page) and tools.report_screenshot.

    with HeadlessChromium() as browser:
        page = browser.open("file:///tmp/report/index.html")
        page.problems            # console errors/warnings, uncaught exceptions, failed loads
        page.evaluate("document.title")
        page.screenshot("shot.png", width=1360, height=2000)
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from passes.files import atomic_open

# Debian's package is "chromium"; other systems name it differently.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# No network, no first-run UI, no sync or component updates: the page alone.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe"]


class BrowserError(Exception):
    pass


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    browser: "HeadlessChromium"
    session: str
    # One line per problem: "console.error: ...", "exception: ...", "log error (network): ..."
    problems: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # every console message, for debugging
    loaded: bool = False

    def evaluate(self, expression: str) -> Any:
        reply = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                       "awaitPromise": True}, self.session)
        if "exceptionDetails" in reply:
            raise BrowserError(f"evaluate failed: {reply['exceptionDetails'].get('text')}: {expression[:80]}")
        return reply.get("result", {}).get("value")

    def settle(self, seconds: float = 0.3) -> None:
        """Let late events (errors from timers, image loads) arrive."""
        self.browser.pump(seconds)

    def screenshot(self, path: str | os.PathLike, width: int = 1360, height: int = 1800) -> None:
        self.browser.call("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, self.session)
        self.settle(0.3)
        reply = self.browser.call("Page.captureScreenshot",
                                  {"format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                                   "captureBeyondViewport": True}, self.session)
        with atomic_open(path, "wb", "screenshot") as handle:
            handle.write(base64.b64decode(reply["data"]))


class HeadlessChromium:
    def __init__(self, executable: str | None = None, timeout: float = 60.0) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no chromium found (Debian: apt-get install -y chromium)")
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._pages: dict[str, Page] = {}
        self._events: list[dict] = []

    # -- process ---------------------------------------------------------------------------
    def __enter__(self) -> "HeadlessChromium":
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Fds >= 10 so that moving them onto 3 and 4 in the child cannot clobber each other.
        high_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
        high_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
        os.close(to_browser_read)
        os.close(from_browser_write)

        def onto_3_and_4() -> None:  # runs in the child, before close_fds
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, high_read, high_write), preexec_fn=onto_3_and_4)
        os.close(high_read)
        os.close(high_write)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.process.poll() is None:
                self._send("Browser.close", {}, None)
                self.process.wait(timeout=10)
        except Exception:
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()  # the process we started, by its handle
                self.process.wait()
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol --------------------------------------------------------------------------
    def _send(self, method: str, params: dict, session: str | None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read_message(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        request = self._send(method, params or {}, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message is None:
                raise BrowserError(f"no reply to {method} within {self.timeout:.0f} s")
            if message.get("id") == request:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self._handle_event(message)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (message := self._read_message(deadline)) is not None:
            self._handle_event(message)

    def _wait_until_loaded(self, page: Page, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not page.loaded:
            message = self._read_message(deadline)
            if message is None:
                raise BrowserError(f"page did not finish loading within {seconds:.0f} s")
            self._handle_event(message)

    def _handle_event(self, message: dict) -> None:
        page = self._pages.get(message.get("sessionId", ""))
        method, params = message.get("method"), message.get("params", {})
        if page is None or method is None:
            return
        if method == "Page.loadEventFired":
            page.loaded = True
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            page.messages.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "warning", "assert"):
                page.problems.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            page.problems.append(f"exception: {description}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            page.messages.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')}")
            if entry.get("level") in ("error", "warning"):
                page.problems.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())

    def open(self, url: str, load_timeout: float = 60.0) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session)
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", {}, session)
        self.call("Page.navigate", {"url": url}, session)
        self._wait_until_loaded(page, load_timeout)
        page.settle(0.3)
        return page
