"""Two-level understanding (exact motive / skill queue / confirm / reject), several requests, the yes/no
lexicon, the policy's several-requests path and ``agi-router motive classify`` — on the bundled catalogue.

Where a figure is asserted it is computed on the project's own sets (``benchmarks/data``): the tune set
chose the thresholds; the held-out set was never tuned on (benchmarks/bench_understanding.py prints the
full table). The bounds are loose on purpose: they catch a broken path, not a point of accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agi_router.motives.catalogue import Catalogue
from agi_router.motives.classifier import MotiveClassifier, RejectRule, load_out_of_scope
from agi_router.motives.evaluation import evaluate, load_items
from agi_router.motives.replies import Reply, reply_of_digit, reply_of_text
from agi_router.motives.several import split_clauses
from agi_router.motives.understanding import Level, Thresholds, Understander
from agi_router.policy.config import Policy, load_policy, parse_policy
from agi_router.policy.engine import decide
from agi_router.policy.model import AccountFacts, Action, CallFacts, MotiveFacts

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def classifier(catalogue: Catalogue) -> MotiveClassifier:
    return MotiveClassifier(catalogue, out_of_scope=load_out_of_scope()[0])


@pytest.fixture(scope="module")
def understander(catalogue: Catalogue, classifier: MotiveClassifier) -> Understander:
    return Understander(catalogue, classifier)


@pytest.fixture(scope="module")
def policy(catalogue: Catalogue) -> Policy:
    return load_policy(catalogue=catalogue)


# ------------------------------------------------------------------------------------------ levels


def test_levels_follow_the_thresholds(catalogue: Catalogue, classifier: MotiveClassifier) -> None:
    text = "c'est au sujet de ma carte vitale"  # a family word, no exact motive
    p = classifier.probabilities([text])[0]
    best = float(p.max())
    skill_p = sum(float(p[i]) for i, m in enumerate(classifier.motive_ids) if catalogue.motives[m].skill == "droits")
    assert best < 0.9 < skill_p + 1e-9 or skill_p > best  # the family is surer than any of its motives

    def level(**kw: float) -> Level:
        th = Thresholds(motive=RejectRule(kw.pop("motive", 0.99), 0.0), **kw)
        return Understander(catalogue, classifier, th).understand(text).level

    assert level(motive=best - 1e-3) is Level.DEFLECTABLE
    assert level(queue_confidence=skill_p - 1e-3) is Level.QUEUE
    assert level(queue_confidence=1.01, confirm_confidence=best - 1e-3) is Level.CONFIRM
    assert level(queue_confidence=1.01, confirm_confidence=1.01) is Level.REJECT


def test_queue_level_acts_on_the_generic_motive_and_keeps_the_guess(understander: Understander) -> None:
    u = understander.understand("c'est au sujet de ma carte vitale")
    assert u.level is Level.QUEUE and u.motive_id == "droits.autre" and u.skill == "droits"
    f = u.facts()
    assert f is not None and f.motive_id == "droits.autre" and f.heard == u.best and f.level == "queue"
    assert u.best is not None and u.best.startswith("carte_vitale")


def test_only_a_sure_exact_motive_can_be_deflected(understander: Understander, policy: Policy) -> None:
    """The queue level never reaches the deflection rule, even for an active account holder."""
    for text in ("c'est au sujet de ma carte vitale", "euh c'est pour un papier"):
        u = understander.understand(text)
        f = u.facts()
        if u.level is not Level.DEFLECTABLE and f is not None:
            assert f.motive_id not in policy.deflect_motives


def test_person_is_checked_first(understander: Understander) -> None:
    u = understander.understand("j'ai perdu ma carte vitale, je veux parler à quelqu'un")
    assert u.level is Level.PERSON and u.person and u.motive_id is None
    f = u.facts()
    assert f is not None and f.human_requested


def test_confirm_and_reject_give_no_facts_until_confirmed(understander: Understander) -> None:
    u = understander.understand("bla")
    assert u.level in (Level.REJECT, Level.CONFIRM, Level.OUT_OF_SCOPE) and u.facts() is None
    if u.level is Level.CONFIRM:
        f = u.facts(confirmed=True)
        assert f is not None and f.confidence == 1.0 and f.level == "confirmed"


# ------------------------------------------------------------------------------------------ several


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("j'ai perdu ma carte vitale et aussi je voulais savoir où en est mon remboursement", 2),
        ("deux choses: mon adresse a changé, et je voudrais une attestation de droits", 2),
        ("je voudrais une attestation de droits", 1),
        ("et", 1),
        ("", 1),
    ],
)
def test_split_clauses(text: str, n: int) -> None:
    assert len(split_clauses(text)) == n


def test_several_requests_name_their_parts(understander: Understander, policy: Policy) -> None:
    u = understander.understand(
        "bonjour j'ai perdu ma carte vitale et puis aussi mes indemnités journalières ne sont toujours pas payées"
    )
    assert u.level is Level.SEVERAL and u.motive_id == "multi_demandes"
    skills = {p.skill for p in u.parts}
    assert skills == {"droits", "indemnites"}
    f = u.facts()
    assert f is not None and len(f.parts) == 2
    # the policy's several-requests path: the most urgent request's queue (loss of income first)
    d = decide(policy, _facts(f))
    assert (d.action, d.rule, d.queue) == (Action.QUEUE, "motive.multi", "indemnites")
    assert "multi.parts_2" in d.reasons


def test_several_requests_on_held_out_sentences(catalogue: Catalogue, understander: Understander) -> None:
    """Never tuned on: several-requests caught, and single motives rarely cut in two."""
    items = load_items(DATA / "understanding_heldout.tsv", catalogue)
    several = [i for i in items if i.kind == "several"]
    single = [i for i in items if i.kind == "motive"]
    r = evaluate(several + single, understander, frozenset())
    caught = r.by_kind["several"]["several_caught"] / len(several)
    split_wrongly = sum(1 for it, u, _ in r.examples if it.kind == "motive" and u.level is Level.SEVERAL)
    assert caught >= 0.5, caught  # 67.5 % when measured (52.5-82.5 % bootstrap)
    assert split_wrongly / len(single) <= 0.1, split_wrongly  # 6.7 % when measured (3.0-10.9 %)


def test_multi_route_human_when_configured(catalogue: Catalogue, policy: Policy) -> None:
    text = (ROOT / "agi_router/data/policy-3646-2024.toml").read_text()
    human = parse_policy(text.replace('route = "most_urgent"', 'route = "human"'), catalogue=catalogue)
    f = MotiveFacts("multi_demandes", 0.9, "speech", parts=("carte_vitale_perte", "ij_non_payees"))
    assert decide(human, _facts(f)).queue == human.human_queue
    assert decide(policy, _facts(MotiveFacts("multi_demandes", 0.9, "speech"))).queue == policy.human_queue


def test_multi_urgency_names_known_skills(catalogue: Catalogue) -> None:
    from agi_router.exceptions import PolicyError

    text = (ROOT / "agi_router/data/policy-3646-2024.toml").read_text().replace('"risques_pro",', '"risques",')
    with pytest.raises(PolicyError, match=r"multi.urgency\[1\]"):
        parse_policy(text, catalogue=catalogue)


# ------------------------------------------------------------------------------------------ out of scope (#23)


@pytest.mark.parametrize(
    "text",
    [
        "je voudrais commander des fleurs pour un mariage",  # none of these is a training sentence
        "mon abonnement à la salle de sport",
        "bla",
    ],
)
def test_out_of_scope_is_an_answer(understander: Understander, text: str) -> None:
    u = understander.understand(text)
    assert u.level is Level.OUT_OF_SCOPE and u.motive_id is None and u.facts() is None
    assert u.as_json()["level"] == "out_of_scope" and 0.0 <= u.similarity <= 1.0


def test_in_scope_sentences_are_not_out_of_scope(understander: Understander) -> None:
    for text in ("j'ai perdu ma carte vitale", "mes indemnités journalières ne sont pas payées"):
        assert understander.understand(text).level in (Level.DEFLECTABLE, Level.QUEUE)


def test_out_of_scope_decided_by_evidence_not_softmax(catalogue: Catalogue, classifier: MotiveClassifier) -> None:
    """Softmax sums to 1 whatever the words; the raw similarity floor does not: with the out-of-scope class
    and margin switched off, words no motive was trained on still never reach a queue."""
    off = Thresholds(out_of_scope_probability=1.01, out_of_scope_margin=9.0, min_similarity=0.0)
    floor = Thresholds(out_of_scope_probability=1.01, out_of_scope_margin=9.0)
    text = "xylophone zèbre kangourou"
    assert Understander(catalogue, classifier, floor).understand(text).level is Level.OUT_OF_SCOPE
    assert Understander(catalogue, classifier, off).understand(text).level is not Level.OUT_OF_SCOPE


def test_held_out_out_of_scope_not_routed(catalogue: Catalogue, understander: Understander, policy: Policy) -> None:
    """Never tuned on: out-of-scope callers are not routed to a skill queue (85 % measured, 75-95 %)."""
    items = [i for i in load_items(DATA / "understanding_heldout.tsv", catalogue) if i.kind == "out_of_scope"]
    r = evaluate(items, understander, frozenset(policy.deflect_motives))
    assert r.share("oos_rejected", "out_of_scope") >= 0.75, r.rows()


# ------------------------------------------------------------------------------------------ catch-alls (#23)


def test_catch_alls_are_never_deflected(catalogue: Catalogue, understander: Understander) -> None:
    """Even on their own training sentences (probability ~1), ``<skill>.autre`` routes at the queue level."""
    texts = [t for m in catalogue if m.id.endswith(".autre") for t in (m.label, *m.examples)]
    heard = understander.understand_many(texts)
    assert not [u for u in heard if u.level is Level.DEFLECTABLE and (u.motive_id or "").endswith(".autre")]
    sure_catch_all = [u for u in heard if (u.best or "").endswith(".autre") and u.best_confidence >= 0.9]
    assert sure_catch_all and all(u.level is Level.QUEUE for u in sure_catch_all)


def test_a_catch_all_is_never_a_part_by_itself(understander: Understander) -> None:
    u = understander.understand("c'est pour une question sur mes remboursements et j'ai perdu ma carte vitale")
    assert u.level is not Level.SEVERAL and not u.parts
    u = understander.understand(
        "bonjour j'ai perdu ma carte vitale et puis aussi mes indemnités journalières ne sont toujours pas payées"
    )
    assert u.level is Level.SEVERAL and not any(p.motive_id.endswith(".autre") for p in u.parts)


@pytest.mark.parametrize(
    "text",
    [
        "le dentiste m'a soigné la semaine dernière et je n'ai toujours rien reçu",
        "j'ai changé de médecin traitant et je suis moins bien remboursé",
        "j'ai envoyé ma feuille de soins et ça fait un mois",
    ],
)
def test_a_complement_is_not_a_second_request(understander: Understander, text: str) -> None:
    assert len(split_clauses(text)) == 1
    assert understander.understand(text).level is not Level.SEVERAL


def test_a_long_second_clause_is_still_a_request() -> None:
    text = "j'ai perdu ma carte vitale et je n'ai toujours pas été payé de mes indemnités journalières de mars"
    assert len(split_clauses(text)) == 2


# ------------------------------------------------------------------------------------------ calibration (#23)

# Expected calibration error of the top motive probability on the bundled held-out sentences (10 bins),
# measured 0.108 (tune set 0.075; benchmarks/bench_understanding.py prints the reliability table). The bound
# leaves 0.04 of margin; a temperature twice too high exceeds it (0.42, checked below).
ECE_BOUND = 0.15


def test_held_out_calibration_within_bound(catalogue: Catalogue, classifier: MotiveClassifier) -> None:
    from agi_router.motives.evaluation import calibration

    held = load_items(DATA / "understanding_heldout.tsv", catalogue)
    table, ece = calibration(held, classifier)
    assert sum(b["n"] for b in table) == sum(1 for i in held if i.kind == "motive")
    assert ece <= ECE_BOUND, (ece, table)
    t = classifier.temperature
    try:
        for factor in (2.0, 3.0):  # the check can fail: a mis-fitted (too soft) temperature breaks the bound
            classifier.temperature = t * factor
            assert calibration(held, classifier)[1] > ECE_BOUND
    finally:
        classifier.temperature = t


def test_reliability_table() -> None:
    from agi_router.motives.evaluation import reliability

    table, ece = reliability([0.95, 0.95, 0.55, 0.55], [True, False, True, True])
    assert [(b["bin"], b["n"]) for b in table] == [("0.5-0.6", 2), ("0.9-1.0", 2)]
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)


# ------------------------------------------------------------------------------------------ yes / no


def test_reply_lexicon_on_held_out_answers() -> None:
    rows = [line.split("\t") for line in (DATA / "confirm_replies.tsv").read_text().splitlines()[1:] if line]
    expected = {"yes": Reply.YES, "no": Reply.NO, "person": Reply.PERSON, "other": Reply.UNKNOWN}
    wrong = [(k, t, reply_of_text(t)) for k, t in rows if reply_of_text(t) is not expected[k]]
    # the dangerous error: a "no" (or noise) read as yes. None allowed.
    assert not [w for w in wrong if w[2] is Reply.YES], wrong
    assert len(wrong) <= len(rows) // 10, wrong


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("Oui.", Reply.YES),
        ("oui oui c'est ça", Reply.YES),
        ("absolument pas", Reply.NO),
        ("non", Reply.NO),
        ("oui... enfin non", Reply.UNKNOWN),
        ("Merci.", Reply.UNKNOWN),
        ("passez-moi un conseiller", Reply.PERSON),
    ],
)
def test_reply_of_text(text: str, reply: Reply) -> None:
    assert reply_of_text(text) is reply


def test_reply_of_digit() -> None:
    assert [reply_of_digit(d) for d in "1203"] == [Reply.YES, Reply.NO, Reply.PERSON, Reply.UNKNOWN]


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.timeout(150)  # 13 s idle, 30 s with both cores busy
def test_motive_classify_cli(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    src.write_text("je veux parler à un conseiller\n\nc'est au sujet de ma carte vitale\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "agi_router", "motive", "classify", str(src)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["level"] for x in lines] == ["person", "queue"]
    assert lines[1]["motive"] == "droits.autre" and lines[1]["queue"] == "droits"
    assert set(lines[0]) >= {"best", "confidence", "skill_confidence", "several", "person"}
    stdin = subprocess.run(
        [sys.executable, "-m", "agi_router", "motive", "classify"],
        input="quelqu'un svp\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(stdin.stdout)["person"] is True
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    r = subprocess.run(
        [sys.executable, "-m", "agi_router", "motive", "classify", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "UTF-8" in r.stderr and len(r.stderr.splitlines()) == 1


def _facts(motive: MotiveFacts) -> CallFacts:
    return CallFacts(
        call_id="1",
        caller="p",
        withheld=False,
        account=AccountFacts.none(),
        motive=motive,
        now=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),  # a Tuesday, 10:00 in Paris: open
    )
