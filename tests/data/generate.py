"""Generate the audio files the tests play (they are not committed).

Speech comes from Debian's ``espeak-ng`` and is converted by ``sox`` to what
Chromium's fake microphone and the tests expect: WAV, 48 kHz, mono, 16-bit.

    python -m tests.data.generate            # writes tests/data/speech.wav

Files are written atomically (temporary name, then rename), so parallel test
sessions never read half a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SPEECH_WAV = DATA_DIR / "speech.wav"

SAMPLE_RATE = 48000

# About ten seconds of continuous speech: the fake microphone loops the file.
SPEECH_TEXT = (
    "Welcome to the audio room. "
    "Speakers on the stage talk, and every listener hears the most active voices. "
    "The server forwards each packet without decoding it, "
    "and reads the audio level from the packet header. "
    "One, two, three, four, five, six, seven, eight, nine, ten."
)


class MissingTool(RuntimeError):
    """Programs needed to make test data are not installed; ``packages`` says which."""

    def __init__(self, packages: list[str]) -> None:
        names = " ".join(packages)
        super().__init__(f"not installed: {names} (apt-get install {names})")
        self.packages = packages


def missing_tools() -> list[str]:
    """The Debian packages (espeak-ng, sox) whose program is not on PATH."""
    return [name for name in ("espeak-ng", "sox") if shutil.which(name) is None]


def make_speech_wav(
    path: Path | str = SPEECH_WAV,
    *,
    text: str = SPEECH_TEXT,
    voice: str = "en",
    pitch: int = 50,
    speed: int = 160,
    overwrite: bool = False,
) -> Path:
    """Write ``text`` spoken by espeak-ng as a 48 kHz mono 16-bit WAV at ``path``.

    Distinct ``voice``/``pitch`` values give distinguishable speakers. Returns
    the path; an existing file is kept unless ``overwrite``. Raises
    :class:`MissingTool` when espeak-ng or sox is missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        return path
    missing = missing_tools()
    if missing:
        raise MissingTool(missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sfu-wav-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        converted = Path(tmp) / "speech.wav"
        subprocess.run(
            # 48 kHz, mono, 16-bit signed; normalised to -3 dBFS.
            ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16"]
            + ["-e", "signed-integer", str(converted), "norm", "-3"],
            check=True,
            capture_output=True,
        )
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        shutil.copyfile(converted, partial)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    check_wav(path)
    return path


def check_wav(path: Path | str) -> None:
    """Raise ValueError unless ``path`` is a 48 kHz mono 16-bit WAV with audio in it."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        frames = wav.getnframes()
    if shape != (SAMPLE_RATE, 1, 2):
        raise ValueError(f"{path}: want 48000 Hz mono 16-bit, got {shape}")
    if frames < SAMPLE_RATE:
        raise ValueError(f"{path}: only {frames} frames, want at least one second")


def main() -> int:
    try:
        print(make_speech_wav(overwrite="--force" in sys.argv))
    except MissingTool as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
