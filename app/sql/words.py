"""Word lists of the classifier: functions known to be safe on a replica, functions that
change something, and keywords that may stand before ``(`` without being a call."""

from __future__ import annotations

__all__ = ["NOT_CALLS", "SAFE_FUNCTIONS", "SESSION_FUNCTIONS", "WRITE_FUNCTIONS"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Built-ins that only compute from their arguments (or read the clock / catalogue), in
# either dialect, plus type names written with a modifier (``varchar(10)``).
SAFE_FUNCTIONS = _words("""
abs acos asin atan atan2 avg bit_and bit_or bit_xor bool_and bool_or cbrt ceil ceiling
char_length character_length chr coalesce concat concat_ws cos cot count cume_dist
date_part date_trunc degrees dense_rank div every exp extract first_value floor format
greatest initcap lag last_value lead least left length ln log log10 lower lpad ltrim max md5
min mod nth_value ntile nullif octet_length percent_rank percentile_cont percentile_disc pi
position power radians random rank regexp_replace regexp_match regexp_matches repeat replace
reverse right round row_number rpad rtrim sign sin split_part sqrt stddev stddev_pop
stddev_samp string_agg strpos substr substring sum tan to_char to_date to_number
to_timestamp translate trim trunc upper var_pop var_samp variance width_bucket
now current_date current_time current_timestamp localtime localtimestamp clock_timestamp
statement_timestamp transaction_timestamp timeofday age make_date make_time make_timestamp
make_timestamptz make_interval justify_days justify_hours justify_interval isfinite
array_agg array_append array_cat array_length array_lower array_upper array_position
array_positions array_prepend array_remove array_replace array_to_string cardinality
string_to_array unnest generate_series generate_subscripts array_ndims array_dims
json_agg jsonb_agg json_build_object jsonb_build_object json_build_array jsonb_build_array
json_object_agg jsonb_object_agg to_json to_jsonb json_extract_path jsonb_extract_path
json_extract_path_text jsonb_extract_path_text json_array_length jsonb_array_length
json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text
json_each jsonb_each json_each_text jsonb_each_text json_object_keys jsonb_object_keys
json_typeof jsonb_typeof jsonb_set jsonb_insert jsonb_pretty jsonb_strip_nulls
row_to_json jsonb_path_query jsonb_path_exists jsonb_path_match json_populate_record
jsonb_populate_record jsonb_to_record jsonb_to_recordset
encode decode convert convert_from convert_to quote_ident quote_literal quote_nullable
gen_random_uuid uuid_generate_v4 version current_schema current_schemas current_database
current_user session_user current_setting pg_typeof format_type pg_sleep
has_table_privilege has_database_privilege has_schema_privilege has_column_privilege
pg_get_viewdef pg_get_indexdef pg_table_size pg_relation_size pg_total_relation_size
pg_database_size pg_size_pretty pg_is_in_recovery pg_last_xact_replay_timestamp
pg_backend_pid txid_current_if_assigned pg_current_snapshot to_tsvector to_tsquery
plainto_tsquery websearch_to_tsquery ts_rank ts_headline
if ifnull isnull isnotnull nvl locate instr ucase lcase mid curdate curtime sysdate
utc_date utc_time utc_timestamp date_format str_to_date datediff date_add date_sub
adddate subdate timestampdiff timestampadd unix_timestamp from_unixtime year month day
dayofweek dayofmonth dayofyear week weekday hour minute second quarter last_day
group_concat json_extract json_unquote json_object json_array json_arrayagg
json_objectagg json_contains json_contains_path json_keys json_length json_valid
json_value json_query json_search json_type json_depth json_set json_insert
json_replace json_remove json_merge_patch json_merge_preserve hex unhex sha1 sha2
crc32 uuid quote substring_index database schema user system_user connection_id
last_insert_id found_rows
row_count char ascii ord bin oct conv field find_in_set elt format_bytes sleep
date time timestamp timestamptz varchar character numeric decimal int integer bigint
smallint float real double bit varbit interval binary varbinary nchar nvarchar
""")

# Calls that change the session (or reach outside it): the statement touches the
# session and is no plain read.
SESSION_FUNCTIONS = _words("""
set_config pg_advisory_lock pg_advisory_lock_shared pg_try_advisory_lock
pg_try_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_shared
pg_advisory_unlock_all dblink dblink_connect dblink_exec dblink_disconnect
dblink_send_query pg_notify pg_cancel_backend pg_terminate_backend pg_reload_conf
get_lock release_lock release_all_locks
""")

# Calls that write: the statement is a write even when it begins with SELECT.
WRITE_FUNCTIONS = _words("""
nextval setval lo_create lo_import lo_export lo_unlink lo_put lo_from_bytea
pg_create_restore_point pg_switch_wal txid_current pg_current_xact_id
""")

# Keywords that may stand right before ``(`` without calling a function.
NOT_CALLS = _words("""
all and any array as asc between by case cast check constraint cube default desc
distinct else end except exists filter from groups grouping having ilike in intersect into
is join key lateral like limit materialized not offset on only or order over partition
primary range recursive references returning rollup row rows select sets similar some
table tablesample then union unique using values when where window with within
""")
