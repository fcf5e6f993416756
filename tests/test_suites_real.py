"""Standard prompt suites (PartiPrompts, DrawBench, HPD v2, Pick-a-Pic v2 test) from small files written
here in each source's published format, placed where a fetch puts them; offline throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import suites
from hf_cache import isolated, snapshot


@pytest.fixture(autouse=True)
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    return isolated(tmp_path, monkeypatch, suites.PROMPTS_ENV, "prompts")


PARTI = ("Prompt\tCategory\tChallenge\tNote\n"
         "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
         "a shiba inu\tAnimals\tBasic\t\n"
         '"G I G G L E" painted in thick colorful lettering as graffiti\tIllustrations\tWriting & Symbols\t\n'
         "a two lane road with a bright yellow line \tOutdoor Scenes\tSimple Detail\t\n")


def write_parti(places: dict[str, Path]) -> None:
    (snapshot(places["cache"], "nateraw/parti-prompts", kind="dataset") / "PartiPrompts.tsv").write_text(PARTI)


def test_missing_suite_files_are_named_with_the_command_that_fetches_them():
    assert suites.available() == ["tiny-eval", "tiny-train"]
    expect = {
        "parti": ["nateraw/parti-prompts/PartiPrompts.tsv",
                  "hf download nateraw/parti-prompts --repo-type dataset PartiPrompts.tsv"],
        "hpdv2": ["zhwang/HPDv2/benchmark/anime.json", "zhwang/HPDv2/benchmark/photo.json",
                  "hf download zhwang/HPDv2 --repo-type dataset benchmark/anime.json benchmark/concept-art.json "
                  "benchmark/paintings.json benchmark/photo.json"],
        "pickapic-test": ["hf download yuvalkirstain/pickapic_v2_no_images --repo-type dataset "
                          "--include 'data/test_unique-*.parquet'"],
        "drawbench": ["imagen/DrawBench/DrawBench.csv", "curl -L", "1y7nAbmR4FREi6npB1u-Bo3GFdwdOPYJc617rBOxIRHY"],
    }
    for name, needles in expect.items():
        with pytest.raises(suites.SuiteError) as err:
            suites.load(name)
        for needle in needles:
            assert needle in str(err.value), (name, needle, str(err.value))


def test_parti_prompts_keep_their_text_category_and_challenge(places: dict[str, Path]):
    write_parti(places)
    suite = suites.load("parti")
    assert suite.name == "parti" and "4 prompts" in suite.description
    assert [p.prompt_id for p in suite.prompts] == ["0000", "0001", "0002", "0003"]
    assert suite.prompts[0].category == "Abstract" and suite.prompts[0].meta["challenge"] == "Basic"
    assert suite.prompts[0].meta["note"] == "Biology-inspired concepts with multiple meanings"
    # no CSV quoting: a prompt that starts with a quote is kept whole; the text is verbatim
    assert suite.prompts[2].text == '"G I G G L E" painted in thick colorful lettering as graffiti'
    assert suite.prompts[3].text.endswith("yellow line ")
    assert suites.available() == ["parti", "tiny-eval", "tiny-train"]


def test_parti_refuses_a_file_with_other_columns(places: dict[str, Path]):
    (snapshot(places["cache"], "nateraw/parti-prompts", kind="dataset") / "PartiPrompts.tsv").write_text("text\tlabel\na\tb\n")
    with pytest.raises(suites.SuiteError, match="PartiPrompts.tsv: expected the columns Prompt, Category"):
        suites.load("parti")


def test_drawbench_reads_the_sheet_export_from_the_local_root(places: dict[str, Path]):
    path = places["root"] / "imagen" / "DrawBench" / "DrawBench.csv"
    path.parent.mkdir(parents=True)
    path.write_text('"Prompts","Category"\n"A red colored car.","Colors"\n'
                    '"A storefront with \'\'Hello World\'\' written on it.","Text"\n"",""\n'
                    '"Five cars on the street.","Counting"\n')
    suite = suites.load("drawbench")
    assert [(p.prompt_id, p.category) for p in suite.prompts] == [
        ("000", "Colors"), ("001", "Text"), ("002", "Counting")]
    assert suite.prompts[1].text == "A storefront with ''Hello World'' written on it."


def test_hpdv2_has_the_four_styles_as_categories_and_benchmark_image_ids(places: dict[str, Path]):
    snap = snapshot(places["cache"], "zhwang/HPDv2", kind="dataset")
    (snap / "benchmark").mkdir()
    for style in suites.HPD_STYLES:
        (snap / "benchmark" / f"{style}.json").write_text(json.dumps([f"{style} one", f"{style} two"]))
    suite = suites.load("hpdv2")
    assert len(suite.prompts) == 8
    assert [p.category for p in suite.prompts[::2]] == ["anime", "concept-art", "paintings", "photo"]
    assert (suite.prompts[3].prompt_id, suite.prompts[3].text) == ("concept-art-00001", "concept-art two")
    (snap / "benchmark" / "photo.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(suites.SuiteError, match="photo.json: expected a JSON array"):
        suites.load("hpdv2")


def test_pickapic_test_reads_distinct_captions_from_the_parquet_split(places: dict[str, Path]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = snapshot(places["cache"], "yuvalkirstain/pickapic_v2_no_images", kind="dataset")
    (snap / "data").mkdir()
    table = pa.table({"caption": ["a cat", "a dog", "a cat", "  ", "a fox"], "ranking_id": [1, 2, 3, 4, 5],
                      "label_0": [1.0, 0.0, 0.5, 1.0, 0.0]})
    pq.write_table(table, snap / "data" / "test_unique-00000-of-00001-e852c19ead276a89.parquet")
    suite = suites.load("pickapic-test")
    assert [(p.prompt_id, p.text) for p in suite.prompts] == [
        ("00000", "a cat"), ("00001", "a dog"), ("00004", "a fox")]
    assert "3 distinct prompts" in suite.description


def test_the_existing_suites_and_the_unknown_name_message(tmp_path: Path):
    assert suites.load("tiny-eval").prompts  # the tiny world's suites are unchanged
    user = tmp_path / "mine.txt"
    user.write_text("a cat\na dog\n")
    assert [p.text for p in suites.load(str(user)).prompts] == ["a cat", "a dog"]
    with pytest.raises(suites.SuiteError, match="unknown suite 'nope'.*standard suites.*parti, pickapic-test"):
        suites.load("nope")


def test_bench_list_suites_shows_every_suite_and_how_to_fetch_the_missing_ones(places):
    from typer.testing import CliRunner

    from bench.cli import app

    write_parti(places)
    listed = dict(suites.catalogue())
    assert set(listed) == {"tiny-eval", "tiny-train", "parti", "hpdv2", "pickapic-test", "drawbench"}
    assert listed["parti"].startswith("PartiPrompts") and "4 prompts" in listed["parti"]
    assert listed["hpdv2"].startswith("not on this machine") and "hf download zhwang/HPDv2" in listed["hpdv2"]
    out = CliRunner().invoke(app, ["list", "suites"], terminal_width=200)
    assert out.exit_code == 0 and "hf download zhwang/HPDv2 --repo-type dataset" in out.output
