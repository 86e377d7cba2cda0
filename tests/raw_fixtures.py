"""Test helpers: a local HTTP file server and generated raw Amazon 2018 files with their expected output.

The expected output is computed here by a plain-Python transcription of UniSRec's rules (a dict of
tuples, loops, the original ``clean_text`` loop), independent of recbench's vectorised code.
"""

from __future__ import annotations

import gzip
import html
import json
import random
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


# --- HTTP server ---------------------------------------------------------------------------------
@dataclass
class Route:
    body: bytes
    status: int = 200
    cut_after: int | None = None  # first request: send the full Content-Length, then only this many bytes
    ranges: bool = True
    failures: int = 0  # answer 503 to this many requests first
    requests: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # http.server's name
        route = self.routes.get(self.path)
        if route is None or route.status == 404:
            self.send_error(404, "Not Found")
            return
        route.requests.append(dict(self.headers))
        if route.failures:
            route.failures -= 1
            self.send_error(503, "Busy")
            return
        if route.status != 200:
            self.send_error(route.status)
            return
        body, start = route.body, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and route.ranges:
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        payload = body[start:]
        if route.cut_after is not None:
            payload, route.cut_after = payload[: route.cut_after], None
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@contextmanager
def file_server(routes: dict[str, Route]) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 in a thread; yields the base URL."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """A URL on a local port nobody listens on (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file"


# --- raw Amazon files ----------------------------------------------------------------------------
LONG = "x" * 1999  # + the final dot = 2000 characters -> empty
META_RECORDS = {
    "I00": {"title": "Plain title", "category": ["Arts", "Paint"], "brand": "Acme"},
    "I01": {"title": "Fish &amp; Chips &quot;deluxe&quot;", "category": ["Food"], "brand": "Cod &amp; Co"},
    "I02": {"title": 'Say "hi"\nnow\r', "category": [], "brand": "Q"},
    "I11": {"title": "Ends with dots...", "category": ["A.", "B.."], "brand": "Dots."},
    "I04": {"title": LONG, "category": ["Long"], "brand": "L"},
    "I05": {"title": "First record wins", "brand": "One"},  # no category
    "I06": {"title": "Dict brand", "category": ["D"], "brand": {"name": "Acme", "id": 1}},
    "I07": {"title": "", "category": ["Empty title"], "brand": ""},  # empty fields become '.'
    "I08": {"title": "...", "category": ["Only dots"]},  # UniSRec's loop: '..'
    "I09": {"title": "Null brand", "category": ["N"], "brand": None},  # null skipped
    "I10": {"category": ["No title"], "brand": "B"},
}


def clean_text_reference(raw_text: object) -> str:
    """UniSRec's clean_text, transcribed loop for loop."""
    if isinstance(raw_text, list):
        cleaned = " ".join(raw_text)
    elif isinstance(raw_text, dict):
        cleaned = str(raw_text)
    else:
        cleaned = raw_text
    cleaned = html.unescape(cleaned)
    cleaned = re.sub(r'["\n\r]*', "", cleaned)
    index = -1
    while -index < len(cleaned) and cleaned[index] == ".":
        index -= 1
    index += 1
    cleaned = cleaned + "." if index == 0 else cleaned[:index] + "."
    return "" if len(cleaned) >= 2000 else cleaned


def text_reference(record: dict) -> str:
    return "".join(
        clean_text_reference(record[k]) + " "
        for k in ("title", "category", "brand")
        if k in record and record[k] is not None
    )


def make_raw(directory: Path, full_name: str = "Toy_Category", seed: int = 7) -> tuple[Path, Path]:
    """Write ``<full_name>.csv`` and ``meta_<full_name>.json.gz``; returns their paths."""
    rng = random.Random(seed)
    items = [f"I{i:02d}" for i in range(40)]
    lines: list[str] = []
    for u in range(70):  # background users, small time range -> many same-timestamp ties
        for _ in range(rng.randint(3, 9)):
            item = rng.choice(items[:30]) if rng.random() < 0.85 else rng.choice(["N0", "N1", "N2", *items[30:]])
            lines.append(
                f"{item},U{u:02d},{rng.choice(['5.0', '4.0', '3', '1.0', '2.5'])},{1000 + rng.randint(0, 6) * 10}"
            )
    # A cascade the k-core needs several rounds for: CB has 4 -> X1 falls to 4 -> CA falls to 4 ...
    lines += [f"X1,CB,5.0,{2000 + k}" for k in range(1)] + [f"I{k:02d},CB,5.0,{2000 + k}" for k in range(1, 4)]
    lines += [f"X1,C{k},5.0,{2100 + k}" for k in range(4)]
    lines += ["X2,CA,4.0,3000", "X1,CA,4.0,3001"] + [f"I{k:02d},CA,4.0,{3002 + k}" for k in range(10, 13)]
    lines += [f"X2,D{k},4.0,{3100 + k}" for k in range(4)] + [
        f"I{k:02d},D{j},4.0,{3200 + k}" for j in range(4) for k in range(20, 24)
    ]
    for k in range(4):
        lines += [f"I{j:02d},C{k},3.0,{2200 + j}" for j in range(5, 9)]
    rng.shuffle(lines)
    dup = lines[5]
    lines.insert(9, dup)  # an exact duplicate
    item, user, rating, ts = lines[12].split(",")
    lines.insert(14, f"{item},{user},{rating},{int(ts) + 7}")  # same pair, another time: kept
    lines.insert(15, f"{item},{user},5.00,{ts}")  # float(rating) equal to an earlier 5.0? only if rating is 5
    lines.insert(20, "  " + lines[20])  # leading whitespace: stripped by UniSRec
    lines[30] = lines[30] + "\r"  # a CRLF line end
    malformed = {
        0: "item,user,rating,time",  # a header: float('rating') fails
        25: "",  # blank line
        40: "I01,U01,5.0,1000,extra",  # 5 fields
        55: "I02,U02,5.0,1.5e9",  # time not an int
        70: '"I03",U03,5.0,1000',  # valid for UniSRec: quoted token, which has no meta
    }
    for position, text in sorted(malformed.items()):
        lines.insert(position, text)
    ratings = directory / f"{full_name}.csv"
    directory.mkdir(parents=True, exist_ok=True)
    ratings.write_text("\n".join(lines) + "\n", newline="")
    records = [
        {"asin": a, **META_RECORDS.get(a, {"title": f"Item {a}", "category": ["Cat", a[:2]], "brand": "Gen"})}
        for a in items + ["X1", "X2"]
    ]
    records.insert(6, {"asin": "I05", "title": "Second record loses", "brand": "Two"})
    records.append({"asin": "ZZ", "title": "Never rated"})
    meta = directory / f"meta_{full_name}.json.gz"
    with gzip.open(meta, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return ratings, meta


@dataclass
class Expected:
    users: list[str]
    sequences: list[list[str]]
    items: list[str]
    texts: dict[str, str]
    malformed_lines: list[int]
    rounds: int


def expected_output(ratings: Path, meta: Path, user_k: int = 5, item_k: int = 5) -> Expected:
    """UniSRec's process_amazon.py in plain Python, with file-order ties (the documented rule)."""
    inters: dict[tuple, None] = {}  # insertion-ordered "set"
    malformed = []
    with open(ratings) as f:
        for number, line in enumerate(f, start=1):
            try:
                item, user, rating, time = line.strip().split(",")
                inters.setdefault((user, item, float(rating), int(time)), None)
            except ValueError:
                malformed.append(number)
    metas: dict[str, dict] = {}
    with gzip.open(meta, "r") as f:
        for line in f:
            data = json.loads(line)
            metas.setdefault(data["asin"], data)
    rows = [r for r in inters if r[1] in metas]
    rounds = 0
    while True:
        users, items = defaultdict(int), defaultdict(int)
        for r in rows:
            users[r[0]] += 1
            items[r[1]] += 1
        if all(c >= user_k for c in users.values()) and all(c >= item_k for c in items.values()):
            break
        rows = [r for r in rows if users[r[0]] >= user_k and items[r[1]] >= item_k]
        rounds += 1
    by_user: dict[str, list[tuple]] = {}
    for r in rows:
        by_user.setdefault(r[0], []).append(r)
    sequences = [[r[1] for r in sorted(group, key=lambda r: r[3])] for group in by_user.values()]
    order: dict[str, None] = {}
    for sequence in sequences:
        for item in sequence:
            order.setdefault(item, None)
    return Expected(
        list(by_user), sequences, list(order), {i: text_reference(metas[i]) for i in order}, malformed, rounds
    )
