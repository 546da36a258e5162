"""Fit a latent to notes: the instrument that plays a sound a user brings.

GANSynth has no encoder. This finds z on the model's latent sphere such that
G(z, pitch) matches given notes, by gradient descent on z alone (the generator is
frozen) with the trainer's GLO reconstruction losses (`engine.gansynth.reconstruction`):

    targets = [target_spectrogram(synth, wave, pitch), ...]   # one per note; several pitches
    result = fit_latent(synth, targets, FitSettings(seed=0), progress=fn, cancel=event)
    result.latent        # float32 [latent_size], on the sphere

1. Starts: the model's learned voices (its latent prior's centers) and `prior_draws`
   draws of its prior (N(0, I) for models without one), each scored by the loss. With
   more than `screen_keep` of them, all are first screened by the spectral L1 of their
   notes' first `screen_rows` frames (a third of the cost) and only the best `screen_keep`
   scored in full: on 48 held-out notes the screen ranked the full loss's top 3 at worst
   29th, and the latents were those of scoring every start in full, for under half the
   scoring time.
2. The `starts` best are each optimised for `start_steps` Adam steps (several basins:
   the nearest voice by the loss is not always the best one to descend from).
3. The best of those continues for `steps` more steps, which descend the GLO loss plus
   `lsd_weight` x the log-spectral distance (dB) of the generated note, through our inverse,
   to the original recording itself (`measures.SpectralReference`: the figure the report
   gives), from a fresh Adam state, ending at the best point visited. The GLO losses weigh
   the loud bins of the model's normalized mel spectrogram (they keep the partials, the
   fundamental above all); the distance weighs every bin in dB, the noise floor and the
   decay included, which is what a listener compares. (`lsd_weight=0`: the GLO losses
   alone, with the Adam state of step 2, as before 2026-12-06.)
After each step z is put back on the sphere (the prior's radius; for a Gaussian prior, the
draws' median norm).

Several notes (of one instrument, at different pitches) share the one z: the loss is
their mean. Each target is first brought to the model's level: the recording's gain is
arbitrary, but the normalized log-magnitude is absolute and the energy weights read it.

Deterministic: the same notes, settings and seed give the same latent (CPU, same threads).
Costs per step about three generator passes per note (forward, backward, resynthesis).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.gansynth.measures import SpectralReference, power
from engine.gansynth.reconstruction import resynthesis_l1, spectral_l1, spectral_weights

LEVEL_QUANTILE = 0.999    # a spectrogram's level: this quantile of its log power (its loud partials)
LEVEL_VOICES = 8          # the model's level at a pitch: the median over this many of its voices


class FitCancelled(Exception):
    """The caller's cancel flag was set."""


@dataclass(frozen=True)
class FitSettings:
    steps: int = 60             # Adam steps of the winning start
    starts: int = 3             # best-scoring starts optimised before one wins
    start_steps: int = 5        # steps each of those gets
    prior_draws: int = 8        # prior draws scored beside the learned voices
    screen_rows: int = 32       # the starts are first screened on their notes' first frames (0: off) ...
    screen_keep: int = 40       # ... and this many of them scored in full
    lr: float = 0.05            # Adam on z (on a unit sphere; scaled with the radius)
    seed: int = 0
    lsd_weight: float = 0.05    # the winner's `steps` descend GLO + lsd_weight * distance (dB)
    final_lr: float = 0.02      # ... from a fresh Adam (the GLO loss's moments do not fit the sum)
    # the GLO losses, as the bundled model's recipe (`lite`) weights them
    energy_weight: float = 4.0
    if_gate: bool = True
    if_energy_weight: float = 8.0
    if_weight: float = 1.0
    audio_weight: float = 1.0

    def __post_init__(self):
        if (self.steps < 0 or self.starts < 1 or self.start_steps < 0 or self.prior_draws < 0 or self.lr <= 0
                or self.final_lr <= 0 or self.lsd_weight < 0 or self.screen_rows < 0
                or self.screen_keep < self.starts):
            raise ValueError(f"fit settings need steps >= 0, starts >= 1, start_steps >= 0, "
                             f"prior_draws >= 0, lr > 0, final_lr > 0, lsd_weight >= 0, screen_rows >= 0, "
                             f"screen_keep >= starts: {self}")


@dataclass(frozen=True)
class Target:
    spec: torch.Tensor     # float32 [2, T, F] normalized model space
    pitch: int
    gain: float            # applied to the wave to reach the model's level
    reference: SpectralReference   # the recording's side of the log-spectral distance


@dataclass(frozen=True)
class FitResult:
    latent: np.ndarray     # float32 [latent_size]
    loss: float            # the GLO loss (what the starts are scored by)
    start: str             # which start won, e.g. "learned voice 12"
    start_loss: float      # its loss before any step
    distance_db: float     # the mean log-spectral distance of the notes to their recordings
    steps: int             # Adam steps taken in all
    seconds: float


# ----------------------------------------------------------------------------- pieces

def level(spec: torch.Tensor, helper) -> torch.Tensor:
    """[..., 2, T, F] normalized -> [...]: natural log power of the loud partials."""
    logpow = (spec[..., 0, :, :] - helper.norm_b[0, 0]) / helper.norm_a[0, 0]
    return torch.quantile(logpow.flatten(-2).float(), LEVEL_QUANTILE, dim=-1)


def analyse(synth, wave: np.ndarray, gain: float = 1.0) -> torch.Tensor:
    """float32 [2, T, F]: a note [samples] as the model's normalized spectrogram."""
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(wave, np.float32) * np.float32(gain))[None]
        return synth.helper.waves_to_specgrams(x.to(synth.device))[0].float().cpu()


def candidates(synth, draws: int, seed: int) -> tuple[np.ndarray, list[str], float]:
    """(float32 [n, latent] start latents, their names, the sphere's radius)."""
    prior = synth.latent_prior
    rng = np.random.default_rng(seed)
    names, rows = [], []
    if prior is not None and prior.centers is not None:
        rows.append(np.asarray(prior.centers, np.float32))
        names += [f"learned voice {i}" for i in range(len(prior.centers))]
    if draws:
        rows.append(prior.sample(draws, rng) if prior is not None else
                    rng.standard_normal((draws, synth.latent_size)).astype(np.float32))
        names += [f"prior draw {i}" for i in range(draws)]
    if not rows:   # no learned voices and no draws: one draw all the same
        rows, names = [synth.random_latents(1, seed)], ["prior draw 0"]
    z = np.concatenate(rows)
    if prior is not None and prior.radius > 0:
        radius = float(prior.radius)
    else:
        radius = float(np.median(np.linalg.norm(z, axis=1)))
    z = z * (radius / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
    return z.astype(np.float32), names, radius


class Objective:
    """The mean GLO loss of G(z, pitch_i) against every target (z shared), plus `lsd_weight`
    x the mean log-spectral distance (dB) of their audio to the targets' recordings;
    `distance(waves)`: that distance alone; `score(z)`: the loss without autograd."""

    def __init__(self, synth, targets: list[Target], settings: FitSettings):
        # Private float32 copies (the render worker keeps its module, and a backend, to itself):
        # for the steps the plain layout (with autograd on, channels_last ran a step ~1.7x
        # slower on CPU); for the scores, without autograd, the synth's (there the fastest).
        self.G = copy.deepcopy(synth.generator).float().to(memory_format=torch.contiguous_format)
        self.G_scoring = copy.deepcopy(synth.generator).float()
        self.helper, self.device = synth.helper, synth.device
        self.labels = torch.tensor([t.pitch - synth.pitch_range[0] for t in targets], device=self.device)
        self.real = torch.stack([t.spec for t in targets]).to(self.device)          # [N, 2, T, F]
        self.references = [t.reference for t in targets]
        self.lsd_weight = 0.0
        self.s = settings
        self.w_mag, self.w_if = spectral_weights(self.real, settings.energy_weight, settings.if_gate,
                                                 settings.if_energy_weight)

    def __call__(self, z: torch.Tensor, fake: torch.Tensor | None = None) -> torch.Tensor:
        """z [latent] -> scalar loss (differentiable in z when grad is on)."""
        if fake is None:
            fake = self.generate(z)
        loss = self._spectral(fake)
        audio = self.helper.specgrams_to_waves(fake) if self.s.audio_weight or self.lsd_weight else None
        if self.s.audio_weight:
            loss = loss + self.s.audio_weight * resynthesis_l1(audio, self.real, self.helper, self.w_mag)
        if self.lsd_weight:
            loss = loss + self.lsd_weight * self.distance(audio)
        return loss

    @torch.inference_mode()
    def score(self, z: torch.Tensor, screen_rows: int | None = None) -> float:
        """The loss of z, without autograd; with `screen_rows`, the screen's: the spectral L1
        of the notes' first `screen_rows` frames alone (computed alone)."""
        fake = self.G_scoring(z[None].expand(len(self.labels), -1), self.labels, time_rows=screen_rows).float()
        return float(self(z, fake) if screen_rows is None else self._spectral(fake))

    def _spectral(self, fake: torch.Tensor) -> torch.Tensor:
        """Scalar: the weighted spectral L1 (magnitude + if_weight x IF) of `fake` [N, 2, rows, F]
        against the targets' first `rows` frames."""
        rows = fake.shape[2]
        err = spectral_l1(fake, self.real[:, :, :rows], self.w_mag[:, :, :rows], self.w_if[:, :, :rows])
        return err[0] + self.s.if_weight * err[1]

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """[N, 2, T, F]: G(z, pitch_i) for every target."""
        return self.G(z[None].expand(len(self.labels), -1), self.labels).float()

    def distance(self, waves: torch.Tensor) -> torch.Tensor:
        """Scalar dB: the mean log-spectral distance of the notes [N, samples] to the recordings."""
        tests = power(self.helper, waves)
        return torch.stack([r.distance(t) for r, t in zip(self.references, tests)]).mean().float()


def _check_cancel(cancel) -> None:
    if cancel is not None and (cancel() if callable(cancel) else cancel.is_set()):
        raise FitCancelled("cancelled")


# ----------------------------------------------------------------------------- the fit

def make_targets(synth, waves: list[np.ndarray], pitches: list[int]) -> list[Target]:
    """Each note [samples] analysed at the model's level: the gain that brings its loud
    partials to the median level of a few of the model's voices at that pitch; with its
    recording's side of the log-spectral distance."""
    voices = _level_voices(synth)
    targets = []
    for wave, pitch in zip(waves, pitches):
        generated = torch.from_numpy(synth.generate_specgrams(voices, [pitch] * len(voices)))
        model_level = float(torch.median(level(generated, synth.helper)))
        raw = analyse(synth, wave)
        gain = float(np.exp(0.5 * (model_level - float(level(raw, synth.helper)))))
        with torch.no_grad():   # (not inference mode: the fit's autograd reads these)
            recording = torch.from_numpy(np.asarray(wave, np.float32)).to(synth.device)
            reference = SpectralReference(power(synth.helper, recording))
        targets.append(Target(analyse(synth, wave, gain), int(pitch), gain, reference))
    return targets


def _level_voices(synth, count: int = LEVEL_VOICES) -> np.ndarray:
    """float32 [<= count, latent]: learned voices spread over the list, or prior draws."""
    prior = synth.latent_prior
    if prior is not None and prior.centers is not None:
        step = -(-len(prior.centers) // count)
        return np.asarray(prior.centers[::step], np.float32)
    return synth.random_latents(count, seed=0)


def fit_latent(synth, targets: list[Target], settings: FitSettings = FitSettings(),
               progress=None, cancel=None) -> FitResult:
    """The latent whose notes match `targets` (all sharing it). `progress(done, total)` is
    called as work units finish; `cancel` (an Event or a callable returning True) raises
    FitCancelled between steps."""
    if not targets:
        raise ValueError("fit_latent needs at least one target note")
    t0 = time.perf_counter()
    if synth.threads is not None and synth.device.type == "cpu":
        torch.set_num_threads(synth.threads)
    starts, names, radius = candidates(synth, settings.prior_draws, settings.seed)
    objective = Objective(synth, targets, settings)
    # progress in generated frames: a full score costs `frames` a note, an Adam step about three times that
    frames = synth.config.output_shape[0]
    rows = min(settings.screen_rows, frames)
    screening = bool(rows) and len(starts) > settings.screen_keep
    scored = settings.screen_keep if screening else len(starts)
    grad_cost = 3 * frames * len(targets)
    total = ((len(starts) * rows if screening else 0) + scored * frames) * len(targets) \
        + grad_cost * (min(settings.starts, scored) * settings.start_steps + settings.steps)
    done = 0

    def tick(units):
        nonlocal done
        done += units
        if progress is not None:
            progress(done, total)

    # 1. score the starts: those the screen keeps (all when it is off) in full
    kept = np.arange(len(starts))
    if screening:
        screened = []
        for z in starts:
            _check_cancel(cancel)
            screened.append(objective.score(torch.from_numpy(z).to(synth.device), rows))
            tick(rows * len(targets))
        kept = np.sort(np.argsort(screened, kind="stable")[:settings.screen_keep])
    scores = np.full(len(starts), np.inf)
    for i in kept:
        _check_cancel(cancel)
        scores[i] = objective.score(torch.from_numpy(starts[i]).to(synth.device))
        tick(frames * len(targets))
    order = np.argsort(scores, kind="stable")[:settings.starts]   # (screen_keep >= starts: never an unscored one)
    runs = []
    for i in order:   # 2. a few steps from each of the best
        z, opt = _start(starts[i], synth.device, settings.lr * radius)
        loss = _descend(objective, z, opt, settings.start_steps, radius, cancel, lambda: tick(grad_cost))
        runs.append((loss if settings.start_steps else scores[i], i, z, opt))
    _, i, z, opt = min(runs, key=lambda r: (r[0], r[1]))
    objective.lsd_weight = settings.lsd_weight   # 3.
    if settings.lsd_weight:   # a fresh descent, kept at its best
        z, opt = _start(z.detach().cpu().numpy(), synth.device, settings.final_lr * radius)
    _descend(objective, z, opt, settings.steps, radius, cancel, lambda: tick(grad_cost),
             keep_best=bool(settings.lsd_weight))
    objective.lsd_weight = 0.0
    with torch.no_grad():
        fake = objective.generate(z)
        distance = float(objective.distance(objective.helper.specgrams_to_waves(fake)))
        loss = float(objective(z, fake))
    latent = z.detach().cpu().numpy().astype(np.float32)
    steps = len(order) * settings.start_steps + settings.steps
    return FitResult(latent, loss, names[i], float(scores[i]), distance, steps, time.perf_counter() - t0)


def _start(z0: np.ndarray, device, lr: float):
    z = torch.tensor(z0, device=device, requires_grad=True)
    return z, torch.optim.Adam([z], lr=lr)


def _descend(objective, z: torch.Tensor, opt, steps: int, radius: float, cancel, tick,
             keep_best: bool = False) -> float:
    """`steps` Adam steps on z, each followed by the projection back onto the sphere; the
    loss before the last step (nan for none). With `keep_best`, z ends at the lowest-loss
    point visited (its start and end included) and that loss is returned."""
    loss, best = float("nan"), None
    for _ in range(steps):
        _check_cancel(cancel)
        with torch.enable_grad():
            value = objective(z)
            opt.zero_grad(set_to_none=True)
            value.backward()
        loss = float(value.detach())
        if keep_best and (best is None or loss < best[0]):
            best = (loss, z.detach().clone())
        opt.step()
        with torch.no_grad():
            z.mul_(radius / z.norm().clamp_min(1e-12))
        tick()
    if keep_best:
        with torch.no_grad():
            loss = float(objective(z))
            if best is not None and best[0] < loss:
                loss = best[0]
                z.copy_(best[1])
    return loss
