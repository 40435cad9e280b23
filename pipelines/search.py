"""Search an index of your videos with a sentence, or serve a search page.

    python -m pipelines.search my-index "a man pours water into a glass" [-k 10] [--json]
    python -m pipelines.search my-index --serve [--host 127.0.0.1 --port 8000]
    python -m pipelines.search my-index --info [--json]

The query is encoded by the text tower of the adapters the index was built with (found through its
provenance and checked by sha256; --adapters gives their new location if they moved). An index built with
other adapters, another backbone or other pretrained weights than the query encoder is refused, naming
both. Results: rank, cosine score, window (start-end seconds, or the whole video) and path. --serve starts
a web page with a search box, thumbnails and the clip playing from its start; it binds 127.0.0.1 unless
--host says otherwise and serves files from inside the indexed folders only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines import cli


def _port(text: str) -> int:
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 0-65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("search", __doc__, progress=False)
    p.add_argument(
        "index", type=Path, metavar="INDEX", help="index folder written by python -m pipelines.index"
    )
    p.add_argument("query", nargs="?", default=None, help="what to look for, in words")
    p.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    cli.add_json_flag(
        p,
        '{"index", "query", "results": [{rank, score, entry, video_id, path, start, end, duration}]}; with '
        '--info {"index", "description", "entries", "files", "roots", "search", "model", "settings", '
        '"skipped": [{path, reason, ...}], "created_at", "updated_at"}',
    )
    p.add_argument(
        "--serve", action="store_true", help="serve the search page instead of answering one query"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind with --serve (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port with --serve, 0-65535 (default: 8000)")
    p.add_argument(
        "--info", action="store_true", help="describe the index (size, model, skipped files) and exit"
    )
    p.add_argument(
        "--adapters",
        default=None,
        metavar="PATH",
        help="where the index's adapters are now, if they moved (their sha256 must match)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="TAG|PATH",
        help="where the index's CLIP weights are now, if they moved (their sha256 must match)",
    )
    cli.add_device_arg(p, "the query encoder")
    p.add_argument("--exact", action="store_true", help="exact search even when the index has an ANN index")
    return p


def _window(r) -> str:
    return "whole video" if r.start is None else f"{r.start:7.1f}-{r.end:.1f} s"


def run(args: argparse.Namespace) -> int:
    from search import VideoIndex
    from search.index import BadKError, check_k

    index = VideoIndex.open(args.index)
    if args.info:
        m = index.manifest
        skipped = [f"  skipped {r['path']}: {r['reason']}" for r in m["skipped"][:20]]
        record = {
            "index": str(args.index),
            "description": index.describe(),
            "entries": m["count"],
            "files": m["files"],
            "roots": m["roots"],
            "search": m["ann_backend"] or "exact",
            "model": m["provenance"],
            "settings": m["settings"],
            "skipped": m["skipped"],
            "created_at": m.get("created_at"),
            "updated_at": m["updated_at"],
        }
        cli.print_report(args, record, "\n".join([index.describe(), *skipped]))
        return 0
    if args.serve:
        if args.query is not None:
            build_parser().error("--serve takes no QUERY (type it in the page)")
        from search.web import serve

        index.load_encoder(
            ... if args.adapters is None else args.adapters,
            ... if args.pretrained is None else args.pretrained,
            device=cli.resolve_device(args.device),
        )
        serve(index, args.host, args.port)
        return 0
    if args.query is None:
        build_parser().error("give a QUERY (or --serve, --info)")
    try:
        check_k(args.k)
    except BadKError as err:
        build_parser().error(str(err))
    index.load_encoder(
        ... if args.adapters is None else args.adapters,
        ... if args.pretrained is None else args.pretrained,
        device=cli.resolve_device(args.device),
    )
    vector = index.encoder.encode_texts([args.query])[0]
    results = index.search_vector(vector, args.k, exact=args.exact)
    if args.json:
        print(
            json.dumps(
                {"index": str(args.index), "query": args.query, "results": [r.to_json() for r in results]},
                indent=2,
            )
        )
        return 0
    print(f"{len(results)} results for {args.query!r} in {args.index} ({len(index)} clips):")
    for r in results:
        print(f"{r.rank:3d}  {r.score:6.3f}  {_window(r):>18}  {r.path}")
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
