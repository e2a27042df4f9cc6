"""`vilasr synth`: every item solvable, every oracle trajectory well formed, correct and rendered by
the core, reflective ones where asked, and the same seed gives byte-identical files."""

import hashlib
import json
import re
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ros_vilasr.cli import main
from ros_vilasr.core import protocol
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.prompts import problem_suffix
from ros_vilasr.core.scoring import extract_answer, rl_accuracy, score_answer
from ros_vilasr.core.session import Budget, Session
from ros_vilasr.evaluation.benchmarks import load_benchmark
from ros_vilasr.synth import ask, look, maze, rig_tasks, scene_tasks
from ros_vilasr.synth import scene as sc
from ros_vilasr.synth.trajectories import write_dataset

SHARE = 0.5


def synth(task, out, n, seed=0, share=SHARE):
    main(["synth", task, "--n", str(n), "--seed", str(seed), "--out", str(out), "--reflective-share", str(share)])
    return out


@pytest.fixture(scope="module")
def maze_dir(tmp_path_factory):
    return synth("maze", tmp_path_factory.mktemp("maze"), 16)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return synth("scene", tmp_path_factory.mktemp("scene"), 10)


def load(out):
    return json.loads((out / "eval.json").read_text()), json.loads((out / "trajectories.json").read_text())


def option_text(item):
    letter = item["answer"]
    return next(o.split(". ", 1)[1] for o in item["options"] if o.startswith(letter + ". "))


@pytest.mark.parametrize("which", ["maze_dir", "scene_dir"])
def test_trajectories_well_formed_correct_and_reflective_where_asked(which, request):
    out = request.getfixturevalue(which)
    items, trajectories = load(out)
    assert [t["id"] for t in trajectories] == [i["id"] for i in items]
    assert sum(t["reflective"] for t in trajectories) == int(len(items) * SHARE)
    for item, t in zip(items, trajectories):
        conv = t["conversations"]
        assert [m["role"] for m in conv[:2]] == ["system", "user"] and conv[-1]["role"] == "assistant"
        turns = [m["content"] for m in conv if m["role"] == "assistant"]
        assert protocol.format_ok(turns), t["id"]
        answer = extract_answer(turns[-1])
        assert rl_accuracy(answer, item["answer"], item["problem_type"]) == 1.0
        assert score_answer(answer, item["answer"], item["problem_type"]) == 1.0
        assert protocol.is_reflective([protocol.parse_turn(x).ops for x in turns]) == t["reflective"]
        assert len(turns) >= 2  # at least one drawing step before the answer
        assert sum(m["content"].count("<image>") for m in conv) == len(t["images"])
        assert t["images"][:len(item["image_path"])] == item["image_path"]
        assert all((out / p).is_file() for p in t["images"])


@pytest.mark.parametrize("which", ["maze_dir", "scene_dir"])
def test_drawn_images_are_the_cores_rendering(which, request):
    """Replaying each trajectory from its saved input images redraws the saved drawings exactly."""
    out = request.getfixturevalue(which)
    items, trajectories = load(out)
    for item, t in zip(items[:4], trajectories[:4]):
        inputs = [Image.open(out / p).convert("RGB") for p in item["image_path"]]
        session = Session(inputs, item["question"], options=item["options"] or (),
                          problem_type=item["problem_type"], kind="video" if len(inputs) > 1 else "single",
                          budget=Budget.evaluation(item["original_question_type"]), key=item["id"])
        run_sessions([session], ReplayEngine([t]))
        assert session.finish_reason == "answer"
        assert session.conversations() == t["conversations"]
        assert len(session.images) == len(t["images"])
        for image, path in zip(session.images, t["images"]):
            assert np.array_equal(np.asarray(image), np.asarray(Image.open(out / path).convert("RGB"))), path


def test_items_load_as_an_evaluation_file(maze_dir, scene_dir):
    mazes = load_benchmark(maze_dir / "eval.json", benchmark="maze")
    assert {m.grid_size for m in mazes} >= {3, 4, 5, 6}
    assert {m.sub_task for m in mazes} == set(maze.SUB_TASKS)
    assert all(len(m.options) == 4 for m in mazes if m.problem_type == "multiple choice")
    scenes = load_benchmark(scene_dir / "eval.json", benchmark="synth_scene")
    assert {s.sub_task for s in scenes} == set(scene_tasks.SUB_TASKS)
    assert {s.problem_type for s in scenes} == {"multiple choice", "regression"}
    videos = [s for s in scenes if s.kind == "video"]
    assert videos and all(len(v.image_paths) == scene_tasks.VIDEO_FRAMES for v in videos)


# -- solvable: answers recomputed independently of the generator ---------------------------------


def read_maze(image: Image.Image, n: int):
    """Walls, S and G read back from the pixels."""
    pixels = np.asarray(image)
    step = maze.cell_size(n)

    def at(x, y):
        return tuple(int(v) for v in pixels[round(y), round(x)])

    def open_between(a, b):
        (xa, ya), (xb, yb) = maze.centre(n, a), maze.centre(n, b)
        return at((xa + xb) / 2, (ya + yb) / 2) != maze.WALL

    marks = {}
    for r in range(n):
        for c in range(n):
            x, y = maze.centre(n, (r, c))
            colour = at(x, y + step * 0.2)  # inside the disc, below the letter
            if colour in (maze.START_COLOR, maze.GOAL_COLOR):
                marks[colour] = (r, c)
    return open_between, marks[maze.START_COLOR], marks[maze.GOAL_COLOR]


def solve(open_between, n, start, goal):
    parent, queue = {start: None}, deque([start])
    while queue:
        cell = queue.popleft()
        for dr, dc in maze.MOVES.values():
            nxt = (cell[0] + dr, cell[1] + dc)
            if 0 <= nxt[0] < n and 0 <= nxt[1] < n and nxt not in parent and open_between(cell, nxt):
                parent[nxt] = cell
                queue.append(nxt)
    path, cell = [], goal
    while cell is not None:
        path.append(cell)
        cell = parent[cell]
    return path[::-1]


def test_maze_items_solvable_from_the_pixels(maze_dir):
    items, _ = load(maze_dir)
    for item in items:
        n = item["grid_size"]
        open_between, start, goal = read_maze(Image.open(maze_dir / item["image_path"][0]).convert("RGB"), n)
        route = maze.runs(solve(open_between, n, start, goal))
        expected = {"maze_turn_count": str(len(route) - 1), "maze_move_sequence": maze.describe(route),
                    "maze_path_length": str(sum(k for _, k in route))}[item["original_question_type"]]
        if item["options"]:
            assert option_text(item) == expected, item["id"]
            assert sum(o.split(". ", 1)[1] == expected for o in item["options"]) == 1  # one right option
        else:
            assert item["answer"] == expected, item["id"]


def ink_runs(band: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] index ranges of the non-white lines of a margin strip (along its first axis)."""
    inked = (band != 255).any(axis=tuple(range(1, band.ndim)))
    edges = np.flatnonzero(np.diff(np.r_[0, inked.astype(int), 0]))
    return list(zip(edges[::2], edges[1::2] - 1))


@pytest.mark.parametrize("n", [3, 4])
def test_labelled_mazes_number_rows_and_columns_in_the_margins(n):
    plain = maze.maze_task(7, 0, sizes=(n,))
    labelled = maze.maze_task(7, 0, sizes=(n,), labels=True)
    before, after = (np.asarray(t.images[0]) for t in (plain, labelled))
    inside = maze.MARGIN - maze.WALL_WIDTH // 2
    # the maze itself is untouched, so the item is the same question about the same pixels
    np.testing.assert_array_equal(after[inside:, inside:], before[inside:, inside:])
    assert (before[:inside, :] == 255).all() and (before[:, :inside] == 255).all()
    ends = tuple(tuple(plain.ground_truth[k]) for k in ("start", "goal"))
    assert read_maze(labelled.images[0], n)[1:] == ends
    rows = ink_runs(after[inside:, :inside])  # ink down the left margin, one number per row
    columns = ink_runs(after[:inside, inside:].transpose(1, 0, 2))  # along the top, one per column
    for runs in (rows, columns):
        assert len(runs) == n
        centres = [inside + (a + b) / 2 for a, b in runs]
        assert centres == pytest.approx([maze.centre(n, (k, k))[0] for k in range(n)], abs=3)  # a glyph pixel is 2 px
    glyphs = [after[inside + a:inside + b + 1, :inside].tobytes() for a, b in rows]
    assert len(set(glyphs)) == n  # n different numbers


def test_synth_labels_numbers_maze_images_and_refuses_other_tasks(tmp_path):
    main(["synth", "maze", "--n", "2", "--seed", "7", "--out", str(tmp_path / "maze"), "--labels"])
    items, _ = load(tmp_path / "maze")
    for i, item in enumerate(items):
        written = np.asarray(Image.open(tmp_path / "maze" / item["image_path"][0]).convert("RGB"))
        np.testing.assert_array_equal(written, np.asarray(maze.maze_task(7, i, 0.25, labels=True).images[0]))
    with pytest.raises(SystemExit, match="maze task only"):
        main(["synth", "scene", "--n", "2", "--out", str(tmp_path / "scene"), "--labels"])


def test_perception_answers_are_read_from_the_pixels(tmp_path):
    write_dataset(look.look_tasks(6, seed=5, sizes=(3, 4), contexts=("short", "maze")), tmp_path, total=6)
    items, trajectories = load(tmp_path)
    assert {i["grid_size"] for i in items} == {3, 4}
    for item, t in zip(items, trajectories):
        n = item["grid_size"]
        _, start, goal = read_maze(Image.open(tmp_path / item["image_path"][0]).convert("RGB"), n)
        assert item["answer"] == f"S {maze.where(start)}; G {maze.where(goal)}"
        # phrased as the maze oracle's first thought, so pretraining teaches what the dialogues ask
        thought = maze.ends(n, start, goal)
        assert t["conversations"][-1]["content"].startswith(f"<think>{thought}")
        assert len(t["conversations"]) == 3 and t["images"] == item["image_path"]  # one turn, no drawing
    # every other question carries a maze item's whole question (options too) before the ask, so
    # the cells are read at the distances from the image that the maze dialogues have
    questions = [i["question"] for i in items]
    assert questions[0] == f"This is a {items[0]['grid_size']}x{items[0]['grid_size']} maze. {look.ASK}"
    asked = maze.maze_task(5, 1, sizes=(3, 4))
    assert questions[1] == "\n".join([asked.question, *asked.options, "Answer with the option's letter from the given "
                                      "choices directly.", f"Do not answer that yet. {look.ASK}"])
    assert ["Do not answer" in q for q in questions] == [False, True] * 3
    noted = [look.look_task(5, i, contexts=("notes",)).question.split(". ")[1:-1] for i in range(8)]
    assert len({len(n) for n in noted}) > 2 and all(f"{x}." in look.NOTES for n in noted for x in n)
    with pytest.raises(ValueError, match="unknown perception context 'wide'"):
        look.look_task(5, 0, contexts=("wide",))


def test_perception_questions_ask_for_one_disc_at_a_time(tmp_path):
    tasks = list(look.look_tasks(12, seed=5, sizes=(3, 4), contexts=("short", "maze"), asks=("both", "start", "goal")))
    # asks cross the contexts: every ask comes in every context
    assert [(t.question.endswith(look.ASK), "Do not answer" in t.question) for t in tasks[:2]] == [(True, False),
                                                                                                  (True, True)]
    for task in tasks:
        n, start, goal = task.grid_size, *read_maze(task.images[0], task.grid_size)[1:]
        thought = task.turns[-1]
        if task.question.endswith("In which cell is the green start S?"):
            assert task.answer == f"S {maze.where(start)}"
            assert thought.startswith(f"<think>The green start S is at {maze.where(start)} of the {n}x{n} grid.<")
        elif task.question.endswith("In which cell is the red goal G?"):
            assert task.answer == f"G {maze.where(goal)}"
            assert thought.startswith(f"<think>The red goal G is at {maze.where(goal)} of the {n}x{n} grid.<")
        else:
            assert task.answer == f"S {maze.where(start)}; G {maze.where(goal)}"
    assert [t.answer[0] for t in tasks] == ["S", "S", "S", "S", "G", "G"] * 2  # both, both, start x2, goal x2
    with pytest.raises(ValueError, match="unknown perception ask 'wall'"):
        look.look_task(5, 0, asks=("wall",))


def test_ask_questions_are_answered_with_the_room_questions_own_objects(tmp_path):
    write_dataset(ask.ask_tasks(8, seed=5), tmp_path, total=8)
    items, trajectories = load(tmp_path)
    # scene and rig in turn, each cycling through its sub-tasks that name every object boxed first
    sources = [scene_tasks.scene_task(5, i) for i in (0, 1, 2, 5)], [rig_tasks.rig_task(5, i) for i in (0, 1, 3, 4)]
    for k, (item, t) in enumerate(zip(items, trajectories)):
        source = sources[k % 2][k // 2]
        first = protocol.parse_turn(source.turns[0])
        objects = [op.label for op in first.ops]
        assert item["answer"] == ", ".join(objects) and all(name in item["question"] for name in objects)
        assert item["question"] == "\n".join([source.question, *(source.options or ()),
                                              problem_suffix(source.problem_type), ask.ASK])
        # the dialogue's own first words, then the answer: one turn, the room's images, no drawing
        assert t["conversations"][-1]["content"] == (f"<think>{first.thought}</think>\nAction: Answer\n"
                                                     f"<answer>{item['answer']}</answer>")
        assert len(t["conversations"]) == 3 and len(t["images"]) == len(source.images)
    assert [i["ground_truth"]["sub_task"] for i in items] == ["object_rel_direction", "rig_side",
                                                              "object_rel_distance", "rig_nearest",
                                                              "object_size_estimation", "rig_side",
                                                              "object_rel_direction", "rig_nearest"]
    with pytest.raises(ValueError, match="unknown question source \\['maze'\\]"):
        ask.ask_task(5, 0, sources=("maze",))


def scene_of(item):
    gt = item["ground_truth"]
    scene = sc.Scene.from_dict(gt["scene"])
    cameras = [sc.Camera(**{**c, "position": tuple(c["position"])}) for c in gt["cameras"]]
    return scene, cameras


def test_scene_items_solvable_from_the_ground_truth(scene_dir):
    items, _ = load(scene_dir)
    for item in items:
        scene, cameras = scene_of(item)
        renders = [sc.render(scene, cam) for cam in cameras]
        for (image, _), path in zip(renders, item["image_path"]):
            assert np.array_equal(np.asarray(image), np.asarray(Image.open(scene_dir / path).convert("RGB")))
        seen = {n for _, boxes in renders for n, b in boxes.items() if b is not None}
        obj = scene.object
        q, task = item["question"], item["original_question_type"]
        if task == "object_rel_direction":
            asked = re.search(r"standing by the (.+?) and facing the (.+?), is the (.+?) to my", q)
            stand, face, target = asked.groups()
            angle = sc.bearing_deg(obj(stand).position, obj(face).position, obj(target).position)
            assert min(abs(abs(angle) - b) for b in (0, 90, 180)) >= scene_tasks.DIRECTION_MARGIN
            expected = sc.relative_direction(obj(stand).position, obj(face).position, obj(target).position, "quadrant")
            named = {stand, face, target}
        elif task == "object_rel_distance":
            listed, ref = re.search(r"objects \((.+)\) is the closest to the (.+)\?", q).groups()
            candidates = listed.split(", ")
            d = sorted((sc.object_distance(obj(ref), obj(c)), c) for c in candidates)
            assert d[1][0] - d[0][0] >= scene_tasks.DISTANCE_MARGIN
            expected, named = d[0][1], {ref, *candidates}
        elif task == "object_size_estimation":
            name = re.search(r"dimension \(length, width, or height\) of the (.+), measured", q).group(1)
            expected, named = str(round(sc.object_size(obj(name)) * 100)), {name}
        elif task == "object_counting":
            plural = re.search(r"How many (.+) are in this room", q).group(1)
            named = {n for n in scene.names if re.fullmatch(r"(.+) \d+", n) and plural.startswith(n.rsplit(" ", 1)[0])}
            expected = str(len(named))
        else:
            listed = re.search(r"in the video: (.+)\?", q).group(1).split(", ")
            first = {n: next(f for f, (_, b) in enumerate(renders) if b[n] is not None) for n in listed}
            assert len(set(first.values())) == len(listed)
            expected, named = ", ".join(sorted(listed, key=first.get)), set(listed)
        assert named <= seen, item["id"]
        assert (option_text(item) if item["options"] else item["answer"]) == expected, item["id"]


# -- determinism -----------------------------------------------------------------------------------


def digest(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task,n", [("maze", 6), ("scene", 5)])
def test_same_seed_gives_byte_identical_output(task, n, tmp_path):
    first = digest(synth(task, tmp_path / "a", n, seed=7))
    again = digest(synth(task, tmp_path / "b", n, seed=7))
    assert first == again and len(first) > 2 * n
    other = digest(synth(task, tmp_path / "c", n, seed=8))
    assert other["eval.json"] != first["eval.json"]


def test_synth_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        synth("maze", tmp_path, 1)
