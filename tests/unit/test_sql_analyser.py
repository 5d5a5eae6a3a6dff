"""The statement analyser on its corpus (tests/unit/sql_corpus.py), binding, and its cache."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import DbType
from app.errors import ValidationFailed
from app.sql import StatementKind, analyse, bind_named, check_positional
from app.sql.analyser import CACHE_SIZE, CACHED_UP_TO, _cached
from tests.unit.sql_corpus import MYSQL, POSTGRES, Row

CASES = [(DbType.POSTGRESQL, row) for row in POSTGRES] + [(DbType.MARIADB, row) for row in MYSQL]


def test_the_corpus_is_large_enough() -> None:
    assert len(POSTGRES) >= 200 and len(MYSQL) >= 200
    assert len({r[0] for r in POSTGRES}) == len(POSTGRES)
    assert len({r[0] for r in MYSQL}) == len(MYSQL)


@pytest.mark.parametrize(("db_type", "row"), CASES, ids=lambda v: repr(v)[:60])
def test_corpus(db_type: DbType, row: Row) -> None:
    sql, names, count, kind = row
    analysis = analyse(sql, db_type)
    assert analysis.error is None
    assert tuple(p.name for p in analysis.placeholders) == names
    assert all(sql[p.start:p.end] == ":" + p.name for p in analysis.placeholders)
    assert analysis.statement_count == count
    assert analysis.kind == StatementKind(kind)
    assert len(analysis.kinds) == count
    assert max(analysis.kinds, key=lambda k: k.rank, default=StatementKind.UNKNOWN) == kind
    assert analysis.read_only == (count > 0 and analysis.kind is StatementKind.READ
                                  and not analysis.touches_session)


@pytest.mark.parametrize("sql", ["SELECT 'open", "SELECT \"open", "SELECT 1 /* open",
                                 "SELECT $$ open", "SELECT /* a /* b */ open",
                                 "SELECT E'\\'", "SELECT `open"])
def test_unterminated_text_is_unknown_with_a_reason(sql: str) -> None:
    db_type = DbType.MARIADB if "`" in sql else DbType.POSTGRESQL
    analysis = analyse(sql, db_type)
    assert analysis.kind is StatementKind.UNKNOWN and analysis.error
    assert not analysis.read_only and analysis.touches_session


def test_mysql_executable_comment_left_open_is_an_error() -> None:
    assert analyse("SELECT /*! 1", DbType.MYSQL).error


def test_read_only_needs_known_safe_functions() -> None:
    pg = DbType.POSTGRESQL
    assert analyse("SELECT count(*), lower(a) FROM t", pg).read_only
    unknown = analyse("SELECT my_func(1)", pg)
    assert unknown.kind is StatementKind.READ and not unknown.read_only
    assert unknown.touches_session
    assert analyse("SELECT 1", pg).touches_session is False


def test_wipes_prepared() -> None:
    pg = DbType.POSTGRESQL
    for sql in ("DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DISCARD ALL", "discard plans",
                "SELECT 1; DISCARD ALL"):
        assert analyse(sql, pg).wipes_prepared, sql
    for sql in ("DEALLOCATE p", "DISCARD TEMP", "SELECT 'DISCARD ALL'"):
        assert not analyse(sql, pg).wipes_prepared, sql
    assert not analyse("DEALLOCATE PREPARE s", DbType.MYSQL).wipes_prepared


# ---- binding ---------------------------------------------------------------------------


def bind(sql: str, params: dict[str, Any], db_type: DbType) -> tuple[str, list[Any]]:
    return bind_named(sql, analyse(sql, db_type), params, db_type)


def test_postgres_binding_numbers_each_name_once() -> None:
    sql, args = bind("SELECT :a::int, ':a', :b, :a -- :c", {"a": 1, "b": 2, "c": 3},
                     DbType.POSTGRESQL)
    assert sql == "SELECT $1::int, ':a', $2, $1 -- :c" and args == [1, 2]


def test_mysql_binding_doubles_every_other_percent() -> None:
    sql, args = bind("SELECT '50%', :v, 10 % 3, ':v' # 5%\n", {"v": "x"}, DbType.MARIADB)
    assert sql == "SELECT '50%%', %s, 10 %% 3, ':v' # 5%%\n" and args == ["x"]
    assert sql % ("'x'",) == "SELECT '50%', 'x', 10 % 3, ':v' # 5%\n"
    sql, args = bind("SELECT :a, :b, :a", {"a": 1, "b": 2}, DbType.MYSQL)
    assert sql == "SELECT %s, %s, %s" and args == [1, 2, 1]


def test_missing_values_are_named() -> None:
    with pytest.raises(ValidationFailed) as caught:
        bind("SELECT :b, :a, ':c'", {}, DbType.POSTGRESQL)
    assert caught.value.details["missing"] == ["a", "b"]


def test_named_and_positional_cannot_mix() -> None:
    with pytest.raises(ValidationFailed, match="mixes"):
        bind("SELECT $1, :a", {"a": 1}, DbType.POSTGRESQL)
    with pytest.raises(ValidationFailed, match="mixes"):
        bind("SELECT %s, :a", {"a": 1}, DbType.MARIADB)


def test_mysql_positional_values_only_fill_markers_outside_quotes() -> None:
    my = DbType.MARIADB
    check_positional(analyse("SELECT %s, '50%%', %s", my), [1, 2], my)
    for sql, values in (("SELECT '%s'", [1]), ("SELECT %s, '50%'", [1]),
                        ("SELECT %s /* %s */", [1, 2]), ("SELECT %d", [1]),
                        ("SELECT %s, %s", [1])):
        with pytest.raises(ValidationFailed):
            check_positional(analyse(sql, my), values, my)
    check_positional(analyse("SELECT '%s'", DbType.POSTGRESQL), [1], DbType.POSTGRESQL)


# ---- the cache -------------------------------------------------------------------------


def test_cache_is_bounded_and_keyed_by_dialect() -> None:
    for i in range(CACHE_SIZE + 50):
        analyse(f"SELECT {i}", DbType.POSTGRESQL)
    info = _cached.cache_info()
    assert info.currsize <= CACHE_SIZE and info.maxsize == CACHE_SIZE
    sql = "SELECT 1 # :x"
    assert analyse(sql, DbType.MARIADB).placeholders == ()
    assert [p.name for p in analyse(sql, DbType.POSTGRESQL).placeholders] == ["x"]
    assert analyse(sql, DbType.MYSQL) is analyse(sql, DbType.MARIADB)  # one family


def test_long_texts_are_analysed_but_not_cached() -> None:
    sql = "SELECT :a, '" + "x" * CACHED_UP_TO + "'"
    before = _cached.cache_info().currsize
    assert analyse(sql, DbType.POSTGRESQL).names == ("a",)
    assert _cached.cache_info().currsize == before


# ---- never a 500 -----------------------------------------------------------------------

SQLISH = st.lists(st.sampled_from([
    "SELECT", "set", "begin", "END", "create", "temp", "WITH", "(", ")", "[", "]", ";", ",",
    ":", "::", ":=", ":a", "$1", "$$", "$t$", "'", "''", '"', "`", "\\", "E'", "U&'", "%",
    "%s", "--", "-- ", "#", "/*", "*/", "/*!", "@", "@@x", "for", "update", "into", "x",
    "1", ".", " ", "\n", "é", "case", "if", "not", "atomic", "rollback", "to",
]), max_size=30).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(sql=st.one_of(st.text(max_size=60), SQLISH))
def test_the_analyser_never_raises(sql: str) -> None:
    for db_type in (DbType.POSTGRESQL, DbType.MARIADB):
        analysis = analyse(sql, db_type)
        if analysis.error is not None:
            assert analysis.kind is StatementKind.UNKNOWN and analysis.statement_count == 0
        assert len(analysis.kinds) == analysis.statement_count
        assert all(sql[p.start:p.end] == ":" + p.name for p in analysis.placeholders)
        if analysis.kind is not StatementKind.READ:
            assert not analysis.read_only


def test_settings_that_change_how_text_reads() -> None:
    my, pg = DbType.MARIADB, DbType.POSTGRESQL
    for sql, db_type in (("SET sql_mode = 'ANSI_QUOTES'", my), ("SET @@SESSION.sql_mode = ''", my),
                         ("SET @a = 1, sql_mode = ''", my),
                         ("SET standard_conforming_strings = off", pg),
                         ("SET LOCAL backslash_quote = on", pg)):
        assert analyse(sql, db_type).changes_syntax, sql
    for sql, db_type in (("SET search_path = a", pg), ("SET @sql_mode = 1", my),
                         ("SELECT 'SET sql_mode = 1'", my)):
        assert not analyse(sql, db_type).changes_syntax, sql


def test_mysql_no_backslash_escapes_reads_backslash_as_a_character() -> None:
    sql = "SELECT 'C:\\', :v"
    assert analyse(sql, DbType.MARIADB).error
    nbe = analyse(sql, DbType.MARIADB, backslash_escapes=False)
    assert nbe.error is None and nbe.names == ("v",)


def test_postgres_without_standard_strings_reads_backslash_escapes() -> None:
    sql = "SELECT 'it\\'s :x', :v"
    assert analyse(sql, DbType.POSTGRESQL).error  # standard: the literal ends at \'
    old = analyse(sql, DbType.POSTGRESQL, backslash_escapes=True)
    assert old.error is None and old.names == ("v",)
