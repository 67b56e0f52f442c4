"""Every fault, bad input and hostile neighbour the project answers for, and the tests that
show it (the table in docs/reliability.md has one row per case).

Tests under ``tests/reliability/`` are the cases this table gained with issue 19; the rest
live beside the feature they exercise. ``tests/conftest.py`` marks all of them
``reliability``, so ``pytest -m reliability`` runs the whole table (CI runs them with the rest).
"""

from __future__ import annotations

# case -> the tests that show it, as "file::test" (a parametrised test: every case of it)
CASES: dict[str, tuple[str, ...]] = {
    "corrupt, truncated, NaN or silent audio": (
        "tests/test_audio.py::test_unreadable_files_are_refused_with_a_reason",
        "tests/test_audio.py::test_truncated_wav_is_caught_from_its_header",
        "tests/test_audio.py::test_fewer_frames_read_than_the_header_says_is_truncation",
        "tests/test_audio.py::test_nan_inf_and_silence_are_refused_on_read",
        "tests/test_preprocess_fusion.py::test_bad_inputs_are_rejected_and_good_files_still_written",
        "tests/test_preprocess_pointer.py::test_bad_labels_and_audio_become_rejects",
    ),
    "streamed WAVs, odd names, 6 channels": (
        "tests/reliability/test_hostile_files.py::test_a_streamed_wav_with_unknown_lengths_reads_in_full",
        "tests/reliability/test_hostile_files.py::test_a_header_that_promises_more_audio_than_the_file_holds_is_refused",
        "tests/reliability/test_hostile_files.py::test_names_with_unicode_spaces_and_shell_characters_are_read_as_names",
    ),
    "a checkpoint whose pickle runs code": (
        "tests/reliability/test_hostile_files.py::test_a_code_running_pickle_is_refused_when_a_checkpoint_is_loaded",
        "tests/reliability/test_hostile_files.py::test_a_code_running_pickle_is_refused_as_a_codec_checkpoint",
        "tests/reliability/test_hostile_files.py::test_jingle_fuse_and_conform_refuse_it_in_one_line_exit_2",
    ),
    "a corrupt or foreign checkpoint": (
        "tests/test_checkpoints.py::test_what_cannot_be_loaded_is_one_checkpoint_error_line",
        "tests/test_train_fusion.py::test_a_corrupt_checkpoint_is_refused",
    ),
    "preprocessing killed (SIGKILL), then rerun": (
        "tests/test_preprocess_fusion.py::test_a_killed_run_resumes_to_exactly_the_clean_result",
    ),
    "two preprocessing runs on one folder": (
        "tests/test_preprocess_fusion.py::test_a_second_run_exits_busy_or_waits_for_the_lock",
    ),
    "a worker killed during training; a stopped training rerun": (
        "tests/test_train_fusion.py::test_a_worker_killed_mid_run_costs_only_the_work_since_the_checkpoint",
        "tests/test_train_fusion.py::test_a_rerun_with_the_same_name_resumes_the_step_counter",
        "tests/test_pointer_pipelines.py::test_rerun_resumes_the_step_counter",
        "tests/test_loop.py::test_fault_at_a_step_then_resume_mid_epoch_ends_on_the_clean_step_counter",
    ),
    "bad data, a bad config value or a bug met inside a training worker": (
        "tests/reliability/test_retries.py::test_a_shard_corrupted_mid_run_fails_once_in_one_line_with_exit_2",
        "tests/reliability/test_retries.py::test_errors_a_restart_would_meet_again_are_marked_and_a_damaged_shard_is_named",
        "tests/reliability/test_retries.py::test_a_crash_is_restarted_up_to_max_failures_and_a_deterministic_error_never",
    ),
    "a long recording (20 min, 2 h)": (
        "tests/reliability/test_decode_memory.py::test_fusion_decode_memory_does_not_grow_with_the_recording",
        "tests/reliability/test_decode_memory.py::test_pointer_featurize_holds_mels_not_audio",
    ),
    "a node lost during preprocessing": (
        "tests/test_multinode_preprocess.py::test_a_lost_node_costs_no_row",
    ),
    "a search interrupted (Ctrl-C), then resumed": (
        "tests/test_tune.py::test_an_interrupted_search_resumes_without_rerunning_finished_trials",
    ),
    "bad configs, overrides, flags and search spaces": (
        "tests/test_train_fusion.py::test_resume_needs_an_existing_run_and_bad_configs_exit_2",
        "tests/test_config.py::test_overrides_set_dotted_keys_and_refuse_unknown_sections",
        "tests/test_preprocess_fusion.py::test_bad_usage_exits_2_with_one_line",
        "tests/test_tune.py::test_a_bad_space_is_refused_with_one_line",
        "tests/test_tune.py::test_bad_flags_are_refused_with_one_line",
        "tests/test_tune_space.py::test_a_bad_space_file_is_refused_in_one_line_naming_the_file_and_key",
    ),
    "a settings file for the scheduled preprocessing": (
        "tests/test_deploy.py::test_the_settings_file_sets_exactly_its_variables_as_literal_text",
        "tests/test_deploy.py::test_a_line_outside_the_format_exits_2_naming_file_and_line",
        "tests/test_deploy.py::test_a_settings_file_others_may_write_is_refused",
    ),
    "the systemd unit that submits it": (
        "tests/test_deploy.py::test_the_service_is_hardened",
        "tests/test_deploy.py::test_the_sandbox_lets_the_script_write_where_it_writes",
        "tests/test_deploy.py::test_systemd_rates_the_hardened_service",
    ),
}


def case_tests() -> set[str]:
    return {test for tests in CASES.values() for test in tests}
