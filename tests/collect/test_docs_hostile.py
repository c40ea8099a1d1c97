"""The docs crawler against hostile servers on 127.0.0.1: one that sends a byte at a time forever (in
its headers or its body) costs a page its deadline and no more; a bogus charset falls back to the
page's own <meta> charset or to detection instead of aborting the collect."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest
from test_collect_sources import Pages, serve

from codetune.artifacts import read_corpus
from codetune.collect import docs
from codetune.collect.config import CollectConfig
from codetune.collect.pipeline import collect

DRIP_FOR_S = 20  # how long the slow pages go on sending (the crawler must give up long before)


class Site(Pages):
    pages: ClassVar[dict] = {
        "/index.html": '<html><body><a href="/slow-body.html">a</a> <a href="/slow-headers.html">b</a>'
        ' <a href="/latin.html">c</a> <a href="/plain.html">d</a>'
        "<h2>Start</h2><pre>start.ok()</pre></body></html>",
        "/plain.html": "<html><body><h2>Plain</h2><pre>plain.ok()</pre></body></html>",
    }

    def do_GET(self):
        if self.path == "/slow-body.html":  # headers at once, then one byte of body at a time
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.drip(b"<html><body><pre>" + b"x" * 1000)
        elif self.path == "/slow-headers.html":  # the status line and headers one byte at a time
            self.drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Slow: " + b"y" * 1000)
        elif self.path == "/latin.html":  # windows-1252 bytes, a charset nobody knows, a <meta> that says
            body = (
                '<html><head><meta charset="windows-1252"></head><body><h2>Caf\xe9</h2>'
                "<pre>menu.add('caf\xe9')</pre></body></html>"
            ).encode("cp1252")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=x-bogus-charset")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/plain.html":  # UTF-8, a bogus charset and no <meta>: detected
            body = "<html><body><h2>Plain</h2><pre>plain.ok('naïve')</pre></body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=x-bogus-charset")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def drip(self, data: bytes) -> None:
        end = time.monotonic() + DRIP_FOR_S
        for byte in data:
            if time.monotonic() > end:
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the crawler hung up: what it should do
                return
            time.sleep(0.25)


@pytest.fixture
def site():
    server, base = serve(Site)
    yield base
    server.shutdown()


def test_slow_pages_cost_their_deadline_and_a_bogus_charset_is_detected(site, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(docs, "PAGE_DEADLINE_S", 1.5)
    started = time.monotonic()
    result = collect(
        CollectConfig(
            sources=[f"docs:{site}/index.html"], out=tmp_path / "c", language="python", docs_delay=0
        )
    )
    took = time.monotonic() - started
    assert took < 10, f"the crawl took {took:.0f} s: a slow page held it past its deadline"
    code = sorted(r["content"] for r in read_corpus(result.out))
    assert code == ["menu.add('café')", "plain.ok('naïve')", "start.ok()"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 2 and all("slow-" in m for m in skipped), skipped
    assert all("1.5 s" in m for m in skipped), skipped


def test_decode_page_falls_back_in_order():
    text = "x = 'é'"
    assert docs.decode_page(text.encode("utf-16"), "x-bogus") == text  # its byte-order mark first
    assert docs.decode_page(text.encode("cp1252"), "latin-1") == text  # then the server's charset
    assert docs.decode_page(text.encode(), "rot13") == text  # not a text encoding: skipped
    assert docs.decode_page(text.encode("cp1252"), None) == text  # not UTF-8: windows-1252
