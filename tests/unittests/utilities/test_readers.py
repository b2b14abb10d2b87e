"""Direct tests of ``clip_metric.utilities.readers``: one way to read users' text files."""

from __future__ import annotations

import json
import os
import threading

import pytest

from clip_metric.utilities.readers import iter_jsonl, located, parse_json, read_table, read_text

# --------------------------------------------------------------------------- read_text


def test_located_wording():
    assert str(located("f.json", 3, "bad")) == "f.json, line 3: bad"
    assert str(located("f.json", "header", "bad")) == "f.json, header: bad"
    assert str(located("f.json", None, "bad")) == "f.json: bad"


def test_read_text_plain_and_with_bom(tmp_path):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_bytes("a red fox\nüber\n".encode())
    bom.write_bytes(b"\xef\xbb\xbf" + "a red fox\nüber\n".encode())
    assert read_text(plain) == read_text(bom) == "a red fox\nüber\n"


def test_read_text_keeps_a_bom_that_is_not_at_the_start(tmp_path):
    path = tmp_path / "inner.txt"
    path.write_bytes(b"a\xef\xbb\xbfb")
    assert read_text(path) == "a\ufeffb"


def test_read_text_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond\nd\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{path}, line 3: not valid UTF-8") as info:
        read_text(path)
    assert "at byte 19)" in str(info.value)  # 11 + 7 bytes of earlier lines, then "d"


def test_read_text_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: dict = {}

    def read() -> None:
        try:
            read_text(fifo, "prompts file")
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = err

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # blocked in open(): release it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail("read_text blocked on a FIFO")
    error = outcome.get("error")
    assert isinstance(error, ValueError)
    assert str(error) == f"prompts file {fifo} is not a regular file"


def test_read_text_refuses_a_directory(tmp_path):
    with pytest.raises(ValueError, match=rf"^file {tmp_path} is a directory, not a file$"):
        read_text(tmp_path)


def test_read_text_refuses_a_device():
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null here")
    with pytest.raises(ValueError, match="is not a regular file"):
        read_text("/dev/null")


def test_read_text_names_a_dangling_symlink(tmp_path):
    link = tmp_path / "captions.txt"
    link.symlink_to(tmp_path / "gone.txt")
    with pytest.raises(FileNotFoundError, match=rf"^caption file {link} is a dangling symbolic link$"):
        read_text(link, "caption file")


def test_read_text_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^score file not found: {tmp_path / 'nope'}$"):
        read_text(tmp_path / "nope", "score file")


def test_read_text_refuses_a_symlink_loop(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ValueError, match=rf"^cannot read file {a}: "):
        read_text(a)


def test_read_text_follows_a_good_symlink(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("hello", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert read_text(link) == "hello"


# --------------------------------------------------------------------------- parse_json


def test_parse_json_plain_values():
    assert parse_json('{"a": [1, 2.5, "x", null, true]}', "f.json") == {"a": [1, 2.5, "x", None, True]}


def test_parse_json_refuses_duplicate_keys_at_the_top():
    with pytest.raises(ValueError, match=r"^f.json, line 3: duplicate key 'a'$"):
        parse_json('{\n "a": 1,\n "a": 2\n}', "f.json")


def test_parse_json_refuses_duplicate_keys_nested_deep():
    text = '{\n "outer": {\n  "list": [\n   {"k": 1},\n   {"k": 2,\n    "k": 3}\n  ]\n }\n}'
    with pytest.raises(ValueError, match=r"^f.json, line 6: duplicate key 'k'$"):
        parse_json(text, "f.json")


def test_parse_json_same_key_in_sibling_objects_is_fine():
    assert parse_json('[{"a": 1}, {"a": 2}, {"b": {"a": 3}}]', "f.json") == [{"a": 1}, {"a": 2}, {"b": {"a": 3}}]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_parse_json_refuses_non_standard_numbers(literal):
    with pytest.raises(ValueError, match=rf"^f.json, line 1: invalid JSON: {literal} is not a number JSON allows$"):
        parse_json(f'{{"score": {literal}}}', "f.json")


def test_parse_json_invalid_names_the_line_and_first_line_offset():
    with pytest.raises(ValueError, match=r"^f.jsonl, line 12: invalid JSON: .*\(column \d+\)$"):
        parse_json('{"a": 1,\n "b": }', "f.jsonl", first_line=11)


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_parse_json_deep_nesting_is_a_value_error_not_a_recursion_error(opening):
    closing = "]" if opening == "[" else "}"
    text = opening * 100_000 + "1" + closing * 100_000
    with pytest.raises(ValueError, match=r"^deep.json, line 1: JSON nested too deeply to read$"):
        parse_json(text, "deep.json")


def test_parse_json_moderate_nesting_is_fine():
    text = "[" * 200 + "1" + "]" * 200
    value = parse_json(text, "f.json")
    for _ in range(200):
        value = value[0]
    assert value == 1


# Loading cost is measured by benchmarks/bench_loaders.py, not timed here.
def test_parse_json_reads_a_large_object():
    big = json.dumps({f"key-{i}": i for i in range(20_000)})
    value = parse_json(big, "big.json")
    assert len(value) == 20_000 and value["key-19999"] == 19_999


def test_parse_json_finds_a_duplicate_after_many_keys():
    pairs = ", ".join(f'"key-{i}": {i}' for i in range(20_000))
    with pytest.raises(ValueError, match="duplicate key 'key-5'"):
        parse_json("{" + pairs + ', "key-5": 0}', "big.json")


# --------------------------------------------------------------------------- iter_jsonl


def test_iter_jsonl_numbers_lines_and_skips_blank_ones():
    text = '{"a": 1}\n\n   \n[2]\r\n"three"\n'
    assert list(iter_jsonl(text, "f.jsonl")) == [(1, {"a": 1}), (4, [2]), (5, "three")]


def test_iter_jsonl_errors_name_the_line():
    with pytest.raises(ValueError, match=r"^f.jsonl, line 3: duplicate key 'x'$"):
        list(iter_jsonl('{"x": 1}\n{"y": 2}\n{"x": 1, "x": 2}\n', "f.jsonl"))


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_iter_jsonl_does_not_split_inside_strings(char):
    # json.dumps(ensure_ascii=False) leaves these unescaped; str.splitlines would split on them.
    rows = [{"prompt": f"before{char}after"}, {"prompt": "next"}]
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
    assert [value for _, value in iter_jsonl(text, "f.jsonl")] == rows


# --------------------------------------------------------------------------- read_table


def test_read_table_header_and_rows_with_their_lines():
    header, rows = read_table('Prompt,Category\n"a, quoted\nprompt",x\n\nplain,y\n', "t.csv", ",")
    assert header == ["Prompt", "Category"]
    assert rows == [(2, {"prompt": "a, quoted\nprompt", "category": "x"}), (5, {"prompt": "plain", "category": "y"})]


def test_read_table_empty_text():
    assert read_table("", "t.csv", ",") == ([], [])
    assert read_table("\n\n", "t.csv", ",") == ([], [])


def test_read_table_unterminated_quote_names_the_line_where_the_field_starts():
    text = 'prompt,category\nfine,a\n"never closed,b\nmore\nlines\n'
    with pytest.raises(ValueError, match=r"^t.csv, line 3: malformed CSV: "):
        read_table(text, "t.csv", ",")


def test_read_table_stray_quote_after_a_closing_quote_names_its_line():
    text = 'prompt,category\nfine,a\nalso fine,b\n"closed" then more,c\n'
    with pytest.raises(ValueError, match=r"^t.csv, line 4: malformed CSV: "):
        read_table(text, "t.csv", ",")


def test_read_table_quote_inside_an_unquoted_field_is_kept():
    _, rows = read_table('prompt,category\nthe word "hello",c\n', "t.csv", ",")
    assert rows == [(2, {"prompt": 'the word "hello"', "category": "c"})]


def test_read_table_after_a_multi_line_field_names_the_right_line():
    text = 'prompt,category\n"two\nlines",a\n"x"y,b\n'
    with pytest.raises(ValueError, match=r"^t.csv, line 4: malformed CSV"):
        read_table(text, "t.csv", ",")


@pytest.mark.parametrize("header", ["prompt,Prompt", "prompt,category,PROMPT ", "a,b,a"])
def test_read_table_refuses_duplicate_columns_case_insensitively(header):
    with pytest.raises(ValueError, match=r"^t.csv, line 1: duplicate column '\w+' in the header$"):
        read_table(header + "\nx,y,z\n", "t.csv", ",")


def test_read_table_refuses_an_unnamed_column():
    with pytest.raises(ValueError, match=r"^t.csv, line 2: header column 2 has no name$"):
        read_table("\nprompt,,category\n", "t.csv", ",")


def test_read_table_refuses_a_row_longer_than_the_header():
    with pytest.raises(ValueError, match=r"^t.csv, line 3: 3 fields but the header has 2 columns$"):
        read_table("prompt,category\na,b\na,b,c\n", "t.csv", ",")


def test_read_table_short_rows_keep_only_their_fields():
    _, rows = read_table("prompt,category\nonly a prompt\n", "t.csv", ",")
    assert rows == [(2, {"prompt": "only a prompt"})]


def test_read_table_tsv_keeps_quotes_verbatim():
    header, rows = read_table('Prompt\tCategory\nthe "word" sign\tx\n"quoted start\ty\n', "t.tsv", "\t")
    assert header == ["Prompt", "Category"]
    assert [row for _, row in rows] == [
        {"prompt": 'the "word" sign', "category": "x"},
        {"prompt": '"quoted start', "category": "y"},
    ]


def test_read_table_crlf_lines():
    _, rows = read_table("prompt,category\r\na,b\r\nc,d\r\n", "t.csv", ",")
    assert rows == [(2, {"prompt": "a", "category": "b"}), (3, {"prompt": "c", "category": "d"})]
