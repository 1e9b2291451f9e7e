import pytest

from slimbench import SlimbenchError
from slimbench.core.data import encode, read_labelled, read_texts

LABEL2ID = {"business": 0, "sport": 1}


def test_reads_jsonl_with_names_and_csv_with_ids(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "sport"}\n{"text": "b", "label": 0}\n')
    data = read_labelled(jsonl, LABEL2ID)
    assert data.texts == ["a", "b"] and data.labels == [1, 0]
    csv = tmp_path / "d.csv"
    csv.write_text('text,label\nhello,1\n"x, y",0\n')
    data = read_labelled(csv, LABEL2ID)
    assert data.texts == ["hello", "x, y"] and data.labels == [1, 0]
    assert read_texts(csv) == ["hello", "x, y"]


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ('{"text": "a"}\n', ".jsonl", r"lacks column\(s\) \['label'\]"),
        (
            '{"text": "a", "label": "weather"}\n',
            ".jsonl",
            "label 'weather' is neither an id nor one of business, sport",
        ),
        ('{"text": "a", "label": 7}\n', ".jsonl", "label id 7 is outside 0..1"),
        ("text,label\n", ".csv", "has no rows"),
        ("hello", ".txt", "use .jsonl or .csv"),
    ],
)
def test_bad_data_is_named(tmp_path, content, suffix, message):
    path = tmp_path / f"d{suffix}"
    path.write_text(content)
    with pytest.raises(SlimbenchError, match=message):
        read_labelled(path, LABEL2ID)


def test_missing_file(tmp_path):
    with pytest.raises(SlimbenchError, match="does not exist"):
        read_labelled(tmp_path / "nope.jsonl")


def test_encode_refuses_a_length_the_special_tokens_fill(tiny_bert):
    """A tokenizer cannot cut a text to a length its special tokens fill: it hands back the whole text,
    longer than the workload asked for (and than the model takes), so such a length is refused."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    text = ["word " * 40]
    assert len(tokenizer(text, max_length=2, truncation=True)["input_ids"][0]) == 2  # [CLS] [SEP]
    assert len(tokenizer(text, max_length=1, truncation=True)["input_ids"][0]) > 40  # not cut at all
    for seq_len in (1, 2):
        with pytest.raises(
            SlimbenchError, match=f"sequence length {seq_len} holds no text: the tokenizer adds 2 "
        ):
            encode(tokenizer, text, seq_len)
    assert tuple(encode(tokenizer, text, 3)["input_ids"].shape) == (1, 3)
