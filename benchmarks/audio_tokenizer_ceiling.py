"""How right can a generated sound be? The audio_vq tokenizer's ceiling, judged by the Sounds oracle.

T2A's accuracy is bounded by what the tokenizer can say: a sound whose codes are perfect still reaches
the oracle through the decoder (codes -> log-mel -> Griffin-Lim). On the first `--clips` records of a
split (val by default: the test split is for final evaluations) this measures, by the same
`sound_correct` the `audio_accuracy` metric uses:

- clean: the rendered clips themselves (the oracle's own check: 1.0 expected);
- griffin_lim: the clips' true log-mels through the decoder's inverse (no codes: the decoder's bound);
- round_trip: encode -> codes -> decode, the tokenizer's whole path (T2A's ceiling).

    python benchmarks/audio_tokenizer_ceiling.py --tokenizer runs/artefacts/tokenizers-<hash>/audio \
        --name t2a [--split val] [--clips 128]

Writes benchmarks/results/audio_tokenizer_ceiling_<name>.{json,md}. Needs packages/mmgen-audio installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from mmgen_audio.accuracy import sound_correct
from mmgen_audio.dataset import SoundsDataset
from mmgen_audio.events import events_from_json
from mmgen_audio.mel import griffin_lim, log_mel, mel_to_magnitude
from mmgen_audio.tokenizer import AudioTokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def accuracy(waves: torch.Tensor, expected: list) -> dict[str, float]:
    judged = [sound_correct(w.numpy(), e) for w, e in zip(waves, expected)]
    by_count = {n: [j.correct for j in judged if j.n_events == n] for n in (1, 2)}
    result = {"accuracy": sum(j.correct for j in judged) / len(judged)}
    result.update({f"events_{n}": sum(v) / len(v) for n, v in by_count.items() if v})
    return result


def true_mel_waves(tokenizer: AudioTokenizer, clean: torch.Tensor) -> torch.Tensor:
    a, filters = tokenizer.architecture, tokenizer.model.filters
    magnitude = mel_to_magnitude(log_mel(clean, filters, n_fft=a.n_fft, hop=a.hop), filters)
    wave = griffin_lim(magnitude, n_fft=a.n_fft, hop=a.hop, length=a.clip_samples, iterations=tokenizer.griffin_lim_iterations)
    return wave.clamp(-1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="a saved audio_vq folder")
    parser.add_argument("--name", required=True, help="names the result files")
    parser.add_argument("--split", default="val")
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--max-events", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)  # Griffin-Lim's initial phases
    tokenizer = AudioTokenizer.load(args.tokenizer)
    data = SoundsDataset(max_events=args.max_events, counts={args.split: args.clips})
    records = list(data.records(args.split))
    expected = [events_from_json(r.meta["events"]) for r in records]
    clean = torch.stack([tokenizer.load_item(r.data) for r in records])

    rows, seconds = {}, {}
    for name, make in {
        "clean": lambda: clean,
        "griffin_lim": lambda: true_mel_waves(tokenizer, clean),
        "round_trip": lambda: tokenizer.decode_waves(tokenizer.encode(clean).tokens),
    }.items():
        start = time.perf_counter()
        waves = make()
        seconds[name] = time.perf_counter() - start
        rows[name] = accuracy(waves, expected)
        print(name, rows[name], flush=True)

    result = {
        "tokenizer": str(args.tokenizer),
        "split": args.split,
        "clips": len(records),
        "griffin_lim_iterations": tokenizer.griffin_lim_iterations,
        "rows": rows,
        "seconds": seconds,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"audio_tokenizer_ceiling_{args.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"audio_vq ceiling by the Sounds oracle: `{args.tokenizer}`, first {len(records)} {args.split} clips, "
        f"Griffin-Lim {tokenizer.griffin_lim_iterations} iterations",
        "",
        "| waveform | all events right | one-event clips | two-event clips |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['accuracy']:.3f} | {row.get('events_1', float('nan')):.3f} | {row.get('events_2', float('nan')):.3f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
