"""Write ./test_input.json: a short two-voice conversation (espeak-ng), encoded to Opus and inlined as base64.

Run once by a developer when the sample should change; the result is committed so the worker's local mode needs
nothing but the repository. Needs espeak-ng and ffmpeg.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from synth import VOICES, synthesize_conversation  # noqa: E402

SCRIPT = [
    (VOICES[0], "Good morning. Thanks for joining the call on such short notice."),
    (VOICES[1], "No problem. I looked at the numbers last night, and they are better than we expected."),
    (VOICES[0], "Great. Then let us ship the second batch at the end of the month."),
    (VOICES[1], "Agreed. I will send a short summary to everyone this afternoon."),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "conversation.wav"
        opus = Path(tmp) / "conversation.ogg"
        synthesize_conversation(SCRIPT, wav, gap=0.5)
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "libopus", "-b:a", "32k", str(opus)],
            check=True,
        )
        payload = {
            "input": {
                "audio_base64": base64.b64encode(opus.read_bytes()).decode(),
                "model": "tiny.en",
                "output_formats": ["srt"],
            }
        }
    (ROOT / "test_input.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote test_input.json ({len(payload['input']['audio_base64']) // 1024} KiB of base64)")


if __name__ == "__main__":
    main()
