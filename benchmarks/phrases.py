"""Forced-decoding phrase scoring with Whisper, and the hybrid audio -> motive classifier.

Not part of the product (moved out of the package): measured on espeak audio (benchmarks/bench_motives.py)
it gained 2.5 points of top-1 for +333 ms at p50, over the end-of-speech budget. Kept, with its benchmark,
to re-measure on real voices.

Free transcription of short telephone utterances is poor on synthetic voices and noisy lines, but Whisper
still "hears" a phrase it is told to look for: the log-probability of a candidate phrase's tokens given the
audio (teacher forcing) separates the right route from the others much better than the transcript does.

:class:`PhraseScorer` (CTranslate2 directly, int8, one thread):

* the utterance (8 kHz int16) is upsampled, turned into log-mel features and encoded ONCE with the short
  encoder window (``window_s``, 6 s as in :mod:`agi_router.speech.recognizer`; longer audio is cut); with
  ``trim`` (default) only the encoder frames of the audio + 1 s are kept for the decoder (cross-attention is
  paid per phrase and per frame: ~20 % faster, same accuracy on the espeak sample);
* every candidate phrase is scored in one batch with ``Whisper.align`` (its ``text_token_probs`` are the
  teacher-forced token probabilities after ``<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>``);
* a phrase's score is its mean token log-probability (length-normalised) minus the same on silence and
  faint noise, computed once at start-up (the language-model prior of the phrase: without it, short common
  phrases win everywhere);
* a motive's score is the best of its phrasings (:data:`KEYPHRASES`, 2 short spoken phrasings per motive).

:class:`HybridClassifier` fuses both: the text classifier's top-K motives from the free transcription,
re-scored by phrase scoring: ``fused = log p_text + beta * phrase_score`` over the short list, softmax with
a temperature, then the confidence + margin reject rule. ``beta``, the temperature and the reject rule
defaults were fitted by ``benchmarks/bench_motives.py --fit`` on espeak-ng audio of the catalogue's
``examples`` (never ``held_out``). Everything here is synchronous and CPU-bound: call it from a thread pool.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agi_router.exceptions import ConfigError
from agi_router.motives.classifier import MotiveClassifier, MotiveGuess, RejectRule, softmax
from agi_router.speech.recognizer import SAMPLE_RATE, Transcript, upsample_8k_to_16k

__all__ = ["KEYPHRASES", "HybridClassifier", "PhraseScorer"]

Pcm = npt.NDArray[np.int16]
_FRAMES_PER_S = 100
_WHISPER_RATE = 16000

#: Short spoken phrasings per motive (what a caller says when asked "what is your call about").
KEYPHRASES: dict[str, tuple[str, ...]] = {
    "suivi_remboursement": ("où en est mon remboursement", "je n'ai pas été remboursé"),
    "releve_remboursements": ("un relevé de remboursements", "le décompte de mes remboursements"),
    "feuille_soins": ("une feuille de soins papier", "j'ai envoyé une feuille de soins"),
    "tiers_payant": ("le tiers payant", "la pharmacie m'a fait avancer les frais"),
    "remboursement_medicaments": ("le remboursement des médicaments", "mes médicaments de la pharmacie"),
    "remboursement_optique": ("le remboursement de mes lunettes", "des lentilles chez l'opticien"),
    "remboursement_dentaire": ("le remboursement du dentiste", "une couronne dentaire"),
    "remboursement_transport": ("un transport en ambulance", "le taxi conventionné"),
    "depassement_honoraires": ("un dépassement d'honoraires", "le médecin m'a fait payer plus cher"),
    "franchise_participation": ("la franchise médicale", "la participation forfaitaire d'un euro"),
    "soins_etranger": ("des soins à l'étranger", "j'étais malade en vacances à l'étranger"),
    "prise_en_charge_ald": ("une affection de longue durée", "la prise en charge à cent pour cent"),
    "remboursements.autre": ("une question sur les remboursements", "un problème de remboursement"),
    "ij_non_payees": ("mes indemnités journalières ne sont pas payées", "je n'ai pas reçu mes indemnités"),
    "ij_montant": ("le montant de mes indemnités journalières", "le calcul de mes indemnités"),
    "attestation_ij": ("une attestation d'indemnités journalières", "une attestation de paiement des indemnités"),
    "arret_travail_envoi": ("envoyer mon arrêt de travail", "mon avis d'arrêt de travail"),
    "arret_travail_prolongation": ("la prolongation de mon arrêt de travail", "mon arrêt est prolongé"),
    "temps_partiel_therapeutique": ("un temps partiel thérapeutique", "reprendre à mi-temps thérapeutique"),
    "reprise_travail": ("la reprise du travail", "je reprends le travail"),
    "convocation_medecin_conseil": ("une convocation du médecin conseil", "un contrôle médical"),
    "arret_travail_sorties": ("les heures de sortie pendant mon arrêt", "partir en vacances pendant mon arrêt"),
    "ij_trop_percu": ("un trop perçu d'indemnités", "on me demande de rembourser des indemnités"),
    "indemnites.autre": ("une question sur mon arrêt de travail", "une question sur mes indemnités"),
    "carte_vitale_commande": ("commander une carte vitale", "une nouvelle carte vitale"),
    "carte_vitale_perte": ("j'ai perdu ma carte vitale", "ma carte vitale est perdue"),
    "carte_vitale_vol": ("on m'a volé ma carte vitale", "le vol de ma carte vitale"),
    "carte_vitale_mise_a_jour": ("mettre à jour ma carte vitale", "la mise à jour de la carte vitale"),
    "attestation_droits": ("une attestation de droits", "une attestation de sécurité sociale"),
    "carte_europeenne": ("la carte européenne d'assurance maladie", "une carte européenne pour voyager"),
    "complementaire_sante_solidaire": ("la complémentaire santé solidaire", "la mutuelle gratuite"),
    "aide_medicale_etat": ("l'aide médicale de l'état", "l'AME pour les étrangers"),
    "changement_adresse": ("changer d'adresse", "j'ai déménagé"),
    "changement_rib": ("changer mon RIB", "changer de compte bancaire"),
    "changement_situation": ("un changement de situation", "je me suis marié"),
    "affiliation": ("m'inscrire à la sécurité sociale", "mon affiliation à l'assurance maladie"),
    "rattachement_enfant": ("rattacher mon enfant", "ajouter mon enfant sur ma carte vitale"),
    "medecin_traitant": ("déclarer mon médecin traitant", "changer de médecin traitant"),
    "compte_ameli_creation": ("créer mon compte ameli", "ouvrir un compte ameli"),
    "compte_ameli_mot_de_passe": ("j'ai oublié mon mot de passe ameli", "le mot de passe de mon compte ameli"),
    "compte_ameli_code_provisoire": ("le code provisoire ameli", "je n'ai pas reçu mon code provisoire"),
    "droits.autre": ("une question sur mes droits", "une question sur mon dossier"),
    "accident_travail_declaration": ("déclarer un accident du travail", "j'ai eu un accident du travail"),
    "accident_travail_indemnites": ("les indemnités de mon accident du travail", "mon accident du travail payé"),
    "accident_travail_soins": ("la feuille d'accident du travail", "les soins de mon accident du travail"),
    "rechute_accident": ("une rechute d'accident du travail", "une rechute de mon accident"),
    "maladie_professionnelle": ("une maladie professionnelle", "déclarer une maladie professionnelle"),
    "rente_accident_travail": ("une rente d'accident du travail", "mon taux d'incapacité permanente"),
    "invalidite_demande": ("demander une pension d'invalidité", "passer en invalidité"),
    "pension_invalidite_paiement": ("le paiement de ma pension d'invalidité", "ma pension d'invalidité"),
    "attestation_pension_invalidite": ("une attestation de pension d'invalidité", "une attestation d'invalidité"),
    "risques_pro.autre": ("une question sur l'invalidité", "une question sur un accident du travail"),
    "declaration_grossesse": ("déclarer ma grossesse", "je suis enceinte"),
    "conge_maternite": ("mon congé maternité", "les dates de mon congé maternité"),
    "indemnites_maternite": ("les indemnités de mon congé maternité", "je ne suis pas payée pendant ma maternité"),
    "conge_paternite": ("le congé paternité", "je vais être papa"),
    "adoption": ("un congé d'adoption", "nous adoptons un enfant"),
    "examens_prenataux": ("les examens prénataux", "les échographies de grossesse"),
    "conge_pathologique": ("un congé pathologique", "une grossesse difficile"),
    "maternite.autre": ("une question sur la maternité", "une question sur ma grossesse"),
    "conseiller": ("je voudrais parler à un conseiller", "parler à quelqu'un"),
    "multi_demandes": ("j'ai plusieurs questions", "plusieurs demandes"),
}


class PhraseScorer:
    """Whisper forced decoding of candidate phrasings (see module docstring). Thread-safe; one call at a time
    per instance is cheapest (CTranslate2 serialises work on its worker anyway).

    ``phrases`` maps motive ids to phrasings (default :data:`KEYPHRASES`); unknown motives score ``-inf``.
    Construction loads the model (~0.5 s) and scores every phrase on silence and faint noise (the baseline).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        phrases: Mapping[str, Sequence[str]] = KEYPHRASES,
        window_s: float = 6.0,
        cpu_threads: int = 1,
        batch: int = 16,
        trim: bool = True,
    ) -> None:
        if not (1 <= window_s <= 30 and float(window_s).is_integer()):
            raise ValueError(f"window_s must be a whole number of seconds from 1 to 30, not {window_s}")
        os.environ["HF_HUB_OFFLINE"] = "1"
        import ctranslate2  # type: ignore[import-untyped]
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor  # type: ignore[import-untyped]
        from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]

        t0 = time.perf_counter()
        self._ct2: Any = ctranslate2
        try:
            self._model: Any = ctranslate2.models.Whisper(
                str(model_dir), device="cpu", compute_type="int8", intra_threads=cpu_threads
            )
            hf = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(f"cannot load the Whisper model in {model_dir}: {exc}", key="speech.model_dir") from None
        self._tok: Any = Tokenizer(hf, True, task="transcribe", language="fr")
        self._features: Any = FeatureExtractor(feature_size=self._model.n_mels)
        self._start = [*self._tok.sot_sequence, self._tok.no_timestamps]
        self.window_frames = int(window_s) * _FRAMES_PER_S
        self.batch = batch
        self.trim = trim
        self._lock = threading.Lock()
        self.phrases: dict[str, tuple[str, ...]] = {m: tuple(p) for m, p in phrases.items()}
        self._tokens: dict[str, list[int]] = {}
        for plist in self.phrases.values():
            for p in plist:
                self._tokens.setdefault(p, list(self._tok.encode(" " + p.strip())))
        self.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.baseline = self._baseline()
        self.baseline_s = time.perf_counter() - t0

    # -------------------------------------------------------------------------------------- internals

    def encode(self, pcm: Pcm) -> Any:
        """Encoder output (1 x window/2 x d_model) of the first ``window_s`` seconds of the utterance."""
        audio = upsample_8k_to_16k(np.asarray(pcm, dtype=np.int16)[: self.window_frames * SAMPLE_RATE // 100])
        feats = self._features(audio, padding=self.window_frames * _WHISPER_RATE // _FRAMES_PER_S)
        feats = feats[:, : self.window_frames]
        if feats.shape[1] < self.window_frames:  # never for padded input; guard anyway
            pad = self.window_frames - feats.shape[1]
            feats = np.pad(feats, ((0, 0), (0, pad)), constant_values=float(feats.min()))
        view = self._ct2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32))
        encoded = np.asarray(self._model.encode(view, to_cpu=True))
        if self.trim:  # keep the encoder frames of the audio + 1 s (cross-attention cost is per frame and phrase)
            keep = min(encoded.shape[1], (math.ceil(len(pcm) / SAMPLE_RATE) + 1) * _FRAMES_PER_S // 2)
            encoded = encoded[:, :keep]
        return encoded

    def mean_logprobs(self, encoded: Any, phrases: Sequence[str]) -> npt.NDArray[np.float64]:
        """Mean token log-probability of each phrase given the encoded audio (batched)."""
        out = np.empty(len(phrases), dtype=np.float64)
        frames = int(encoded.shape[1]) * 2
        for lo in range(0, len(phrases), self.batch):
            chunk = phrases[lo : lo + self.batch]
            enc = np.ascontiguousarray(np.repeat(encoded, len(chunk), axis=0))
            toks = [self._tokens.get(p) or list(self._tok.encode(" " + p.strip())) for p in chunk]
            with self._lock:
                res = self._model.align(
                    self._ct2.StorageView.from_array(enc), self._start, toks, frames, median_filter_width=1
                )
            for i, r in enumerate(res):
                probs = np.asarray(r.text_token_probs, dtype=np.float64)
                out[lo + i] = float(np.mean(np.log(np.maximum(probs, 1e-12)))) if len(probs) else -math.inf
        return out

    def _baseline(self) -> dict[str, float]:
        """Each phrase's mean log-probability on 2 s of silence and on 2 s of faint noise, averaged."""
        phrases = sorted(self._tokens)
        if not phrases:
            return {}
        rng = np.random.default_rng(0)
        clips = [
            np.zeros(2 * SAMPLE_RATE, dtype=np.int16),
            np.clip(rng.normal(0, 300, 2 * SAMPLE_RATE), -32768, 32767).astype(np.int16),
        ]
        total = np.zeros(len(phrases))
        for clip in clips:
            total += self.mean_logprobs(self.encode(clip), phrases)
        return {p: float(v / len(clips)) for p, v in zip(phrases, total, strict=True)}

    # -------------------------------------------------------------------------------------- API

    def score(self, pcm: Pcm, motive_ids: Sequence[str], *, encoded: Any = None) -> dict[str, float]:
        """Per-motive score: best (mean log-prob given the audio - the same on silence/noise) of its phrasings."""
        if encoded is None:
            encoded = self.encode(pcm)
        wanted = [(m, p) for m in motive_ids for p in self.phrases.get(m, ())]
        scores = {m: -math.inf for m in motive_ids}
        if not wanted:
            return scores
        unique = sorted({p for _, p in wanted})
        lp = dict(zip(unique, self.mean_logprobs(encoded, unique), strict=True))
        for m, p in wanted:
            scores[m] = max(scores[m], lp[p] - self.baseline.get(p, 0.0))
        return scores


@dataclass(frozen=True, slots=True)
class HybridResult:
    """A fused guess with its parts (for logs and benchmarks)."""

    guess: MotiveGuess
    text_guess: MotiveGuess
    phrase_scores: dict[str, float]
    latency_s: float


class HybridClassifier:
    """Text top-K from the transcript, re-ranked by phrase scoring on the audio (see module docstring)."""

    #: Fitted by ``benchmarks/bench_motives.py --fit`` on espeak audio of the catalogue's examples.
    DEFAULT_BETA = 2.0
    DEFAULT_TEMPERATURE = 1.58
    DEFAULT_REJECT = RejectRule(0.82, 0.0)

    def __init__(
        self,
        text: MotiveClassifier,
        scorer: PhraseScorer,
        *,
        k: int = 6,
        beta: float | None = None,
        temperature: float | None = None,
        reject: RejectRule | None = None,
    ) -> None:
        self.text = text
        self.scorer = scorer
        self.k = k
        self.beta = self.DEFAULT_BETA if beta is None else beta
        self.temperature = self.DEFAULT_TEMPERATURE if temperature is None else temperature
        self.reject = self.DEFAULT_REJECT if reject is None else reject

    def parts(self, pcm: Pcm, transcript: Transcript | str) -> tuple[MotiveGuess, list[str], dict[str, float]]:
        """The text guess, the short list and the phrase scores (no fusion): what :meth:`fuse` needs."""
        text = transcript.text if isinstance(transcript, Transcript) else transcript
        text_guess = self.text.classify(text, top=max(self.k, 2))
        short = [m for m, _ in text_guess.candidates[: self.k]]
        return text_guess, short, self.scorer.score(pcm, short)

    def fuse(
        self,
        text_guess: MotiveGuess,
        short: Sequence[str],
        phrase_scores: Mapping[str, float],
        *,
        beta: float | None = None,
        temperature: float | None = None,
        reject: RejectRule | None = None,
    ) -> MotiveGuess:
        beta = self.beta if beta is None else beta
        temperature = self.temperature if temperature is None else temperature
        rule = self.reject if reject is None else reject
        p_text = dict(text_guess.candidates)
        fused = np.array(
            [
                math.log(max(p_text.get(m, 0.0), 1e-9)) + beta * max(phrase_scores.get(m, -math.inf), -10.0)
                for m in short
            ],
            dtype=np.float32,
        )
        probs = softmax(fused, temperature)
        order = np.argsort(-probs, kind="stable")
        cands = tuple((short[i], round(float(probs[i]), 6)) for i in order)
        conf = cands[0][1]
        runner = cands[1][1] if len(cands) > 1 else 0.0
        return MotiveGuess(
            motive_id=cands[0][0] if rule.accepts(conf, runner) else None,
            confidence=conf,
            runner_up=cands[1][0] if len(cands) > 1 else None,
            runner_up_confidence=runner,
            candidates=cands,
            method=f"hybrid:text-top{self.k}+phrases",
        )

    def classify_audio(self, pcm: Pcm, transcript: Transcript | str) -> MotiveGuess:
        """Fused guess for one utterance (8 kHz int16) and its free transcription. Blocking: use a thread."""
        return self.classify_audio_detailed(pcm, transcript).guess

    def classify_audio_detailed(self, pcm: Pcm, transcript: Transcript | str) -> HybridResult:
        t0 = time.perf_counter()
        text_guess, short, scores = self.parts(pcm, transcript)
        guess = self.fuse(text_guess, short, scores)
        return HybridResult(guess, text_guess, scores, time.perf_counter() - t0)
