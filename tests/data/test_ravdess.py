import pytest

from cfnsr.data.ravdess import find_clips, parse_name
from cfnsr.data.splits import all_splits, make_split
from cfnsr.errors import DataError


def test_parse_name():
    n = parse_name("/x/Actor_12/01-01-06-01-02-01-12.mp4")
    assert (n.modality, n.vocal_channel, n.emotion, n.intensity, n.statement, n.repetition, n.actor) == (
        1, 1, 6, 1, 2, 1, 12)
    assert n.label == 5 and n.emotion_name == "fearful" and n.stem == "01-01-06-01-02-01-12"
    assert n.is_full_av and n.is_speech


@pytest.mark.parametrize(
    "name, message",
    [
        ("01-01-06-01-02-01.mp4", "seven two-digit fields"),
        ("01-01-6-01-02-01-12.mp4", "seven two-digit fields"),
        ("01-01-09-01-02-01-12.mp4", "emotion is 09, expected 01-08"),
        ("01-01-06-01-02-01-25.mp4", "actor is 25, expected 01-24"),
        ("04-01-06-01-02-01-12.mp4", "modality is 04"),
        ("01-01-01-02-02-01-12.mp4", "no strong intensity for neutral"),
        ("clip.mp4", "not a RAVDESS file name"),
    ],
)
def test_parse_name_errors(name, message):
    with pytest.raises(DataError, match=message):
        parse_name(name)


def test_find_clips_skips_video_only_and_song(tmp_path):
    d = tmp_path / "Actor_01"
    d.mkdir()
    for stem in ("01-01-03-01-01-01-01", "02-01-03-01-01-01-01", "01-02-03-01-01-01-01"):
        (d / f"{stem}.mp4").write_bytes(b"")
    assert [n.stem for _, n in find_clips(tmp_path)] == ["01-01-03-01-01-01-01"]
    assert len(find_clips(tmp_path, include_song=True)) == 2
    (d / "01-01-03-01-01-01-02.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="names actor 02 but lies in Actor_01"):
        find_clips(tmp_path)
    with pytest.raises(DataError, match="no Actor_XX folders"):
        find_clips(d)


@pytest.mark.parametrize("protocol", ["msaf", "honest"])
def test_splits_keep_each_actor_in_one_part(protocol):
    actors = list(range(1, 25))
    splits = all_splits(actors, protocol, folds=6)
    tested = []
    for s in splits:
        parts = [set(s.train), set(s.val), set(s.test)]
        assert set().union(*parts) == set(actors)
        assert not parts[0] & (parts[1] | parts[2]), "training actors must never be evaluation actors"
        if protocol == "honest":
            assert not parts[1] & parts[2] and len(s.train) == 16
        else:
            assert parts[1] == parts[2] and len(s.train) == 20
        tested += s.test
    assert sorted(tested) == actors  # every actor is tested exactly once over the folds
    assert make_split(actors, "msaf", 1).test == (1, 2, 3, 4)  # MSAF: consecutive actors
    assert make_split(actors, "honest", 6).val == (1, 2, 3, 4)  # validation wraps around


def test_split_errors():
    with pytest.raises(DataError, match="cannot be cut into 6 equal folds"):
        make_split(range(1, 9), "msaf", 1, folds=6)
    with pytest.raises(DataError, match="fold 7 is out of range"):
        make_split(range(1, 25), "msaf", 7)
    with pytest.raises(DataError, match="unknown split protocol"):
        make_split(range(1, 25), "random", 1)
