"""The vocabulary keeps reserved ids, caps its size and never emits an id out of range."""

from captioner.vocabulary import END, PAD, SPECIAL_TOKENS, START, UNK, Vocabulary


def test_reserved_ids_come_first():
    vocabulary = Vocabulary.build([["dog", "runs"], ["dog"]], max_words=10)
    assert vocabulary.words[:4] == list(SPECIAL_TOKENS)
    assert (PAD, UNK, START, END) == (0, 1, 2, 3)
    assert vocabulary.size == 6
    assert vocabulary.encode(["dog"]) == [4]  # most frequent word first


def test_max_words_keeps_most_frequent_and_unknowns_map_to_unk():
    captions = [["a"] * 5 + ["dog"] * 3 + ["cat"] * 2 + ["emu"]]
    vocabulary = Vocabulary.build(captions, max_words=2)
    assert vocabulary.size == 6
    assert "cat" not in vocabulary and "emu" not in vocabulary
    ids = vocabulary.encode(["a", "cat", "zebra", "dog"])
    assert ids == [4, UNK, UNK, 5]
    assert max(ids) < vocabulary.size


def test_ties_are_broken_alphabetically_so_builds_repeat():
    one = Vocabulary.build([["b", "a", "c"]], max_words=2)
    two = Vocabulary.build([["c", "b", "a"]], max_words=2)
    assert one.words == two.words == [*SPECIAL_TOKENS, "a", "b"]
    assert one.sha256() == two.sha256()


def test_decode_strips_specials_and_stops_at_end():
    vocabulary = Vocabulary.build([["dog", "runs"]], max_words=10)
    dog, runs = vocabulary.encode(["dog", "runs"])
    assert vocabulary.decode([START, dog, UNK, PAD, runs, END, dog]) == ["dog", "runs"]
    assert vocabulary.decode([END]) == []
    assert vocabulary.decode([999]) == []


def test_save_load_round_trip(tmp_path):
    vocabulary = Vocabulary.build([["a", "dog"], ["a", "cat"]], max_words=10)
    vocabulary.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded.words == vocabulary.words
    assert loaded.sha256() == vocabulary.sha256()
