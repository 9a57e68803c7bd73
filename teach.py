"""Teach it your own actions in the browser: ``python teach.py`` and open http://127.0.0.1:8000/.

    python teach.py [--source 0|URL|VIDEO] [--examples datasets/my_actions] [--port 8000]

The page shows the camera with everyone's skeleton. Add actions, record a few clips of each (a countdown,
then a few seconds; saved as videos in one folder per action, their features cached at once), press Train
(the same Lightning run as ``train.py``, in the background), then watch the new model label you live, with
``unknown`` for what it was not taught. The folder and the checkpoint are ordinary: ``train.py
fit --config configs/teach.yaml --data.dataset datasets/my_actions`` and ``infer.py -c <examples>/.training/runs/.../best-*.ckpt``
use them. Listens on 127.0.0.1 only unless ``--host`` says otherwise. See README.md, "Teach it in the browser".
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG = Path(__file__).resolve().parent / "configs" / "teach.yaml"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other error of the tool
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="0", help="camera index (default 0), stream URL, or a video file replayed in a loop as a stand-in camera")
    p.add_argument("--examples", type=Path, default=Path("datasets/my_actions"), help="folder of action folders for the clips (default datasets/my_actions)")
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: where train.py caches that folder's, datasets/cache/<name>)")
    p.add_argument("--config", type=Path, default=CONFIG, help="training config (default configs/teach.yaml): extractor settings and the recipe")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets anyone on the network drive your camera)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        p.error(f"--port {a.port}: give 0-65535")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    # after --help: torch and the model load here
    from pipeline.teach.server import listen, serve
    from pipeline.teach.studio import Studio, StudioOptions

    sock = listen(a.host, a.port)
    studio = Studio(a.source, StudioOptions(config=a.config, examples=a.examples, cache_dir=a.cache_dir, device=a.device))
    host, port = sock.getsockname()[:2]
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {a.host}: anyone who can reach this machine can use the camera and the app", flush=True)
    print(f"teaching app at http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/ (examples in {a.examples}; Ctrl-C to stop)", flush=True)
    serve(studio, sock)


if __name__ == "__main__":
    from pipeline.errors import run_cli

    run_cli(main)
