"""A small ReDial folder in He et al.'s format (data/redial/), written by the tests: never the dataset."""

from __future__ import annotations

import json
from pathlib import Path

FILMS = list(range(100, 160))  # entity ids of films; 900 is a person
PERSON = 900


def film_uri(entity: int) -> str:
    return f"<http://dbpedia.org/resource/Film_{entity}_({1950 + entity % 50}_film)>"


def write_redial(folder: Path, dialogues: int = 30) -> Path:
    """`dialogues` conversations of three recommendation turns each. In dialogue d the seeker first names
    film A and a person; the recommender suggests B; the seeker asks for "something scary" (d even) or
    "a comedy" (d odd); the recommender suggests C and, again, B; the seeker thanks and asks once more;
    the recommender suggests B once more (already named: never a target). test_p3.jsonl holds the same
    turns with film names replaced by "[movie]"."""
    folder.mkdir(parents=True, exist_ok=True)
    turns, blanked = [], []
    for d in range(dialogues):
        a, b, c = FILMS[d % 20], FILMS[20 + d % 20], FILMS[40 + (d * 3) % 20]
        name = {e: f"Film {e} ({1950 + e % 50})" for e in (a, b, c)}
        want = "something scary" if d % 2 == 0 else "a comedy"
        seeker = [f"Hi! I loved {name[a]} with Some Actor", f"Seen it. Now I want {want}", "Thanks, one more?"]
        system = [f"Try {name[b]}", f"Then {name[c]} or {name[b]}"]
        plan = [  # (context utterances, recommended entities, entities named before)
            (["", seeker[0]], [b], [a, PERSON]),
            (["", seeker[0], system[0], seeker[1]], [c, b], [a, PERSON, b]),
            (["", seeker[0], system[0], seeker[1], system[1], seeker[2]], [b], [a, PERSON, b, c]),
        ]
        for k, (context, rec, before) in enumerate(plan):
            lines = [("User" if i % 2 else "System") + ": " + text for i, text in enumerate(context) if i]
            rendered = "\n" + "\n".join(lines) + "\nSystem: "
            turn = {
                "context": context,
                "resp": "…",
                "rec": rec,
                "entity": rec,
                "prev_entity": before,
                "dialog_id": f"test_{20000 + d}",
                "turn_id": 1000 * d + k,
                "is_user": 0,
                "entity_name": [name[e] for e in rec],
                "input": rendered,
            }
            turns.append(turn)
            hidden = rendered
            for title in name.values():
                hidden = hidden.replace(title, "[movie]")
            blanked.append({**turn, "input": hidden})
    (folder / "test.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns))
    (folder / "test_p3.jsonl").write_text("".join(json.dumps(t) + "\n" for t in blanked))
    (folder / "item_ids.json").write_text(json.dumps(FILMS))
    entities = {film_uri(e): e for e in FILMS} | {"<http://dbpedia.org/resource/Some_Actor>": PERSON}
    (folder / "entity2id.json").write_text(json.dumps(entities))
    return folder
