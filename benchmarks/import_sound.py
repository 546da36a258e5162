"""Sound import: how long a fit takes, and (with a SoundFont) how close it gets.

    python -m benchmarks.import_sound [--model PATH] [--paper] [--repeat 3]
    python -m benchmarks.import_sound --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 \\
        --programs 6,12,21,22,25,41,46,57,60,64,68,70,74 --pitches 48,60,72 --out /tmp/import17

Time (one torch thread): `fit_latent` alone and the whole `import_sound` (read, CREPE full,
fit, report) for a note the bundled model made from a blend of two learned voices; with
--paper, the fit alone with a paper-size generator (random weights: only the time means
something), skipped when one step says it would take longer than --max-seconds.

Quality (--soundfont): each program's note at each pitch is rendered (FluidSynth) and
imported at its own pitch ("single"), then all of a program's notes together into one latent
("joint"). Per note: the log-spectral distance of the fitted note to the original against the
original's own mel-IF round trip (the target: at most 1.5x), HNR, and CREPE's pitch of the
fitted note (target: within 50 cents). Per program (single: the latent fitted at the middle
pitch; joint): across the keyboard (--keyboard pitches) the latent's note is ranked among
every program's real note at that pitch by log-spectral distance. Rainbowgrams (original |
round trip | fit, and the keyboard strips) and the latents (latents.npz) go to --out.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.common import summary


def model_note(synth, pitch: int = 60) -> np.ndarray:
    """A note of the model from the normalised sum of two learned voices (none of the fit's starts)."""
    prior = synth.latent_prior
    if prior is not None and prior.centers is not None and len(prior.centers) > 17:
        z = (prior.centers[3] + prior.centers[17]).astype(np.float32)
        z *= float(np.linalg.norm(prior.centers[3])) / float(np.linalg.norm(z))
    else:
        z = synth.random_latents(1, seed=123)[0]
    return synth.generate(z[None], [pitch])[0]


def time_bundled(synth, repeat: int, settings) -> dict:
    from engine.gansynth.latentfit import FitSettings, fit_latent, make_targets
    from engine.gansynth.noteaudio import pitch_tracker
    from engine.gansynth.soundimport import import_sound

    wave = model_note(synth)
    fit_s, all_s, steps = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_note.wav"
        sf.write(path, wave, synth.sample_rate, subtype="FLOAT")
        tracker = pitch_tracker("full")
        import_sound(synth, [path], tracker=tracker, settings=FitSettings(steps=1, starts=1, start_steps=0,
                                                                         prior_draws=0))   # warm up
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = fit_latent(synth, make_targets(synth, [wave], [60]), settings)
            fit_s.append(time.perf_counter() - t0)
            steps = result.steps
            t0 = time.perf_counter()
            report = import_sound(synth, [path], tracker=tracker, settings=settings)
            all_s.append(time.perf_counter() - t0)
    print(f"bundled model, 1 thread: fit {statistics.median(fit_s):.1f} s ({steps} steps; "
          f"runs {', '.join(f'{s:.1f}' for s in fit_s)}), whole import with CREPE full and the report "
          f"{statistics.median(all_s):.1f} s; recovered LSD {report.notes[0].lsd_fit_db:.2f} dB")
    return {"bundled_fit_s": round(statistics.median(fit_s), 2), "bundled_import_s": round(statistics.median(all_s), 2),
            "fit_steps": steps}


def time_paper(max_seconds: float, settings) -> dict:
    from engine.gansynth.config import PRESETS, SpectralConfig
    from engine.gansynth.latentfit import Objective, candidates, fit_latent, make_targets
    from engine.gansynth.model import Generator
    from engine.gansynth.synth import Synth

    torch.manual_seed(0)
    synth = Synth(Generator(PRESETS["paper"]), SpectralConfig(), device="cpu", threads=1)
    wave = synth.generate(synth.random_latents(1, seed=5), [60])[0]
    targets = make_targets(synth, [wave], [60])
    objective = Objective(synth, targets, settings)
    z = torch.from_numpy(candidates(synth, 1, 0)[0][0]).requires_grad_(True)
    t0 = time.perf_counter()
    objective(z).backward()
    step_s = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        objective(z.detach())
        score_s = time.perf_counter() - t0
    n_starts = len(candidates(synth, settings.prior_draws, 0)[0])
    estimate = n_starts * score_s + (settings.starts * settings.start_steps + settings.steps) * step_s
    print(f"paper-size generator (7.3 M parameters, random weights), 1 thread: {step_s:.2f} s a step, "
          f"{score_s:.2f} s a score; a fit would take ~{estimate:.0f} s")
    if estimate > max_seconds:
        print(f"  skipped the full fit (over --max-seconds {max_seconds:.0f})")
        return {"paper_step_s": round(step_s, 2), "paper_fit_s_estimate": round(estimate, 1)}
    t0 = time.perf_counter()
    fit_latent(synth, targets, settings)
    seconds = time.perf_counter() - t0
    print(f"  measured fit: {seconds:.1f} s")
    return {"paper_step_s": round(step_s, 2), "paper_fit_s": round(seconds, 1)}


# ----------------------------------------------------------------------------- quality

def side_by_side(waves, rate: int, path: Path) -> None:
    from engine.gansynth.rainbowgram import rainbowgram, save_png

    images = [rainbowgram(w, rate, bins_per_octave=24) for w in waves]
    gap = np.full((images[0].shape[0], 6, 3), 255, np.uint8)
    row = images[0]
    for img in images[1:]:
        row = np.concatenate([row, gap, img], 1)
    save_png(row, path, scale=(2, 1))


def render_notes(soundfont, programs, pitches) -> dict[tuple[int, int], np.ndarray]:
    from engine.training.soundfont import SILENCE_PEAK, NoteRenderer

    renderer = NoteRenderer(soundfont)
    notes = {}
    try:
        for program in programs:
            renderer.select(program)
            for pitch in pitches:
                wave = renderer.render(pitch, 100)
                if np.max(np.abs(wave)) >= SILENCE_PEAK:
                    notes[(program, pitch)] = wave
    finally:
        renderer.close()
    return notes


def quality(synth, args) -> dict:
    from engine.gansynth.noteaudio import pitch_tracker

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    programs, pitches, keyboard = args.programs, args.pitches, args.keyboard
    real = render_notes(args.soundfont, programs, sorted(set(pitches) | set(keyboard)))
    tracker = pitch_tracker("full")
    rows, joint_rows, latents = [], [], {}
    for program in programs:
        paths = []
        for pitch in pitches:
            if (program, pitch) not in real:
                continue
            paths.append(out / f"p{program:03d}_{pitch}.wav")
            sf.write(paths[-1], real[(program, pitch)], synth.sample_rate, subtype="FLOAT")
            result = _import(synth, [paths[-1]], [pitch], tracker, rows, f"program {program:3d} single",
                             args.settings)
            with torch.inference_mode():
                rt = synth.helper.specgrams_to_waves(synth.helper.waves_to_specgrams(
                    torch.from_numpy(real[(program, pitch)])[None]))[0].numpy()
            side_by_side([real[(program, pitch)], rt, synth.generate(result.latent[None], [pitch])[0]],
                         synth.sample_rate, out / f"p{program:03d}_{pitch}_orig_rt_fit.png")
            if pitch == pitches[len(pitches) // 2]:
                latents[f"{program}_single"] = result.latent
        if len(paths) > 1:   # one latent shared by all the program's notes
            used = [int(p.stem.split("_")[1]) for p in paths]
            result = _import(synth, paths, used, tracker, joint_rows, f"program {program:3d} joint", args.settings)
            latents[f"{program}_joint"] = result.latent
    np.savez(out / "latents.npz", **latents)
    figures = {"notes": len(rows), **_table("single", rows), **_table("joint", joint_rows)}
    for kind in ("single", "joint"):
        figures.update(_keyboard(synth, real, programs, keyboard, latents, kind, out))
    figures["rows"] = rows
    return figures


def _import(synth, paths, pitches, tracker, rows, label, settings):
    from engine.gansynth.soundimport import import_sound

    result = import_sound(synth, paths, pitches=pitches, tracker=tracker, settings=settings)
    for n in result.notes:
        rows.append(dict(program=int(Path(n.path).stem[1:4]), pitch=n.pitch, lsd_fit=n.lsd_fit_db,
                         lsd_rt=n.lsd_roundtrip_db, ratio=n.lsd_ratio, hnr_orig=n.hnr_original_db,
                         hnr_rt=n.hnr_roundtrip_db, hnr_fit=n.hnr_fit_db, cents=n.fit_cents,
                         fit_s=result.fit.seconds))
        print(f"{label} pitch {n.pitch}: LSD fit {n.lsd_fit_db:5.2f} dB, round trip {n.lsd_roundtrip_db:5.2f} "
              f"(x{n.lsd_ratio:.2f}); HNR {n.hnr_original_db:5.1f} / {n.hnr_roundtrip_db:5.1f} / "
              f"{n.hnr_fit_db:5.1f} dB; fit pitch "
              f"{'unvoiced' if n.fit_cents is None else f'{n.fit_cents:+.0f} cents'}; {result.fit.seconds:.1f} s",
              flush=True)
    return result


def _table(kind: str, rows) -> dict:
    if not rows:
        return {}
    ratios = [r["ratio"] for r in rows]
    in_tune = sum(r["cents"] is not None and abs(r["cents"]) <= 50 for r in rows)
    print(f"{kind}: {len(rows)} notes, LSD ratio median {np.median(ratios):.2f} (range {min(ratios):.2f}-"
          f"{max(ratios):.2f}), {sum(r <= 1.5 for r in ratios)} at or under 1.5x; LSD fit median "
          f"{np.median([r['lsd_fit'] for r in rows]):.2f} dB, round trip {np.median([r['lsd_rt'] for r in rows]):.2f};"
          f" HNR median orig {np.nanmedian([r['hnr_orig'] for r in rows]):.1f} / rt "
          f"{np.nanmedian([r['hnr_rt'] for r in rows]):.1f} / fit {np.nanmedian([r['hnr_fit'] for r in rows]):.1f} dB;"
          f" fitted pitch within 50 cents {in_tune}/{len(rows)}; fit median {np.median([r['fit_s'] for r in rows]):.1f} s")
    return {f"{kind}_lsd_ratio_median": round(float(np.median(ratios)), 3),
            f"{kind}_lsd_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            f"{kind}_under_1_5x": sum(r <= 1.5 for r in ratios), f"{kind}_pitch_within_50_cents": in_tune,
            f"{kind}_fit_s_median": round(float(np.median([r["fit_s"] for r in rows])), 2)}


def _keyboard(synth, real, programs, keyboard, latents, kind: str, out: Path) -> dict:
    """Does the latent stay its instrument across the keyboard? At each pitch its note is ranked
    among every program's real note there by log-spectral distance (1 = its own is nearest;
    chance is the middle); and its distance to its own program there against at the fitted pitch."""
    from engine.gansynth.measures import log_spectral_distance_db

    ranks, own_lsd = [], []
    for program in programs:
        z = latents.get(f"{program}_{kind}")
        if z is None:
            continue
        fitted = [synth.generate(z[None], [p])[0] for p in keyboard]
        side_by_side(fitted, synth.sample_rate, out / f"p{program:03d}_{kind}_keyboard_{keyboard[0]}-{keyboard[-1]}.png")
        for p, wave in zip(keyboard, fitted):
            dist = {q: log_spectral_distance_db(real[(q, p)], wave, synth.helper) for q in programs if (q, p) in real}
            if program in dist:
                order = sorted(dist, key=dist.get)
                ranks.append((order.index(program) + 1, len(order)))
                own_lsd.append(dist[program])
    if not ranks:
        return {}
    mean_rank = float(np.mean([r for r, _ in ranks]))
    chance = float(np.mean([(n + 1) / 2 for _, n in ranks]))
    top3 = sum(r <= 3 for r, _ in ranks)
    print(f"{kind} latents across the keyboard {keyboard[0]}-{keyboard[-1]}: own program nearest at "
          f"{sum(r == 1 for r, _ in ranks)}/{len(ranks)} pitches, in the nearest 3 at {top3}, mean rank "
          f"{mean_rank:.1f} (chance {chance:.1f}); LSD to its own program median {np.median(own_lsd):.2f} dB")
    return {f"{kind}_keyboard_own_nearest": sum(r == 1 for r, _ in ranks), f"{kind}_keyboard_top3": top3,
            f"{kind}_keyboard_pairs": len(ranks), f"{kind}_keyboard_mean_rank": round(mean_rank, 2),
            f"{kind}_keyboard_chance_rank": round(chance, 2)}


def _ints(text: str) -> list[int]:
    from engine.training.soundfont import parse_int_list

    return parse_int_list(text, 0, 127, "number")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paper", action="store_true", help="also time a paper-size generator's fit")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--soundfont", default=None)
    parser.add_argument("--programs", type=_ints, default=_ints("6,12,21,22,25,41,46,57,60,64,68,70,74"))
    parser.add_argument("--pitches", type=_ints, default=_ints("48,60,72"))
    parser.add_argument("--keyboard", type=_ints, default=_ints("36,42,48,54,60,66,72,78,84"))
    parser.add_argument("--out", default="/tmp/import_sound_bench")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--lsd-weight", type=float, default=None,
                        help="the fit's weight on the log-spectral distance (default: FitSettings'; "
                             "0: the fit before 2026-12-06)")
    args = parser.parse_args(argv)
    from engine.gansynth.latentfit import FitSettings
    from engine.gansynth.synth import load_synth
    from engine.util.resources import default_model_path

    torch.set_num_threads(1)
    synth = load_synth(args.model or default_model_path(), device="cpu", threads=1)
    args.settings = FitSettings() if args.lsd_weight is None else FitSettings(lsd_weight=args.lsd_weight)
    figures = {"lsd_weight": args.settings.lsd_weight}
    if not args.no_timing:
        figures.update(time_bundled(synth, args.repeat, args.settings))
        if args.paper:
            figures.update(time_paper(args.max_seconds, args.settings))
    if args.soundfont:
        figures.update(quality(synth, args))
    summary("import_sound", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
