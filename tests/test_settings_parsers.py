"""Settings parsers (consumer/settings_parsers.py): property mappings, stream names and
ARNs, dead-letter targets."""

from __future__ import annotations

import pytest

from tests.support import SettingsFactory, assert_rejected

ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/"


class TestValid:
    def test_mappings_are_trimmed_and_parsed(self, make_settings: SettingsFactory) -> None:
        """Whitespace around entries is trimmed; nested sources stay paths."""
        settings = make_settings(
            additionalPropertyMappings=" properties.userId : distinct_id ,  a.b.0:c ,"
        )
        assert [(m.source.segments, m.destination) for m in settings.property_mappings] == [
            (("properties", "userId"), "distinct_id"),
            (("a", "b", "0"), "c"),
        ]

    def test_stream_arn_gives_the_stream_name(self, make_settings: SettingsFactory) -> None:
        """streamArn may replace streamName."""
        assert make_settings(streamName=None, streamArn=ARN + "clicks").stream_name == "clicks"

    @pytest.mark.parametrize(
        ("value", "target"),
        [
            ("file: dead.jsonl", ("file", "dead.jsonl")),  # spaces after ':' are not in the path
            ("kinesis:events-dead-letter", ("kinesis", "events-dead-letter")),  # another stream
            ("kinesis:Events", ("kinesis", "Events")),  # stream names are case-sensitive
        ],
    )
    def test_dead_letter(
        self, make_settings: SettingsFactory, value: str, target: tuple[str, str]
    ) -> None:
        """A dead-letter file path or another stream of a valid name."""
        dead_letter = make_settings(deadLetter=value).dead_letter
        assert (dead_letter.kind.value, dead_letter.location) == target


class TestInvalid:
    @pytest.mark.parametrize(
        ("overrides", "key", "value", "allowed"),
        [
            ({"streamName": None}, "streamName", "", "required"),  # nothing to read
            (
                {"streamName": "my events"},
                "streamName",
                "my events",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # a space
            (
                {"streamName": "s" * 129},
                "streamName",
                "s" * 129,
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # too long
            (
                {"streamName": "événements"},
                "streamName",
                "événements",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # not ASCII
            (
                {"streamName": None, "streamArn": "clicks"},
                "streamArn",
                "clicks",
                "arn:aws:kinesis",
            ),  # not an ARN
            (
                {"streamName": None, "streamArn": ARN + "my clicks"},
                "streamArn",
                ARN + "my clicks",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # an ARN of an impossible name
            (
                {"deadLetter": "s3:bucket"},
                "deadLetter",
                "s3:bucket",
                "file:<path>",
            ),  # unsupported destination
            ({"deadLetter": "file:"}, "deadLetter", "file:", "file:<path>"),  # no path
            ({"deadLetter": "file:  "}, "deadLetter", "file:", "file:<path>"),  # blank path
            ({"deadLetter": "kinesis:"}, "deadLetter", "kinesis:", "kinesis:<stream name>"),
            (
                {"deadLetter": "kinesis:dead letters"},
                "deadLetter",
                "kinesis:dead letters",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # an impossible stream name
            (
                {"deadLetter": "kinesis:events"},
                "deadLetter",
                "kinesis:events",
                "other than the source stream events",
            ),  # dead letters fed back into the input
            (
                {"deadLetter": "kinesis: events"},
                "deadLetter",
                "kinesis: events",
                "other than the source stream events",
            ),  # a space does not hide the loop
            (
                {"streamName": None, "streamArn": ARN + "clicks", "deadLetter": "kinesis:clicks"},
                "deadLetter",
                "kinesis:clicks",
                "other than the source stream clicks",
            ),  # the source named by its ARN
        ],
    )
    def test_bad_streams(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str | None],
        key: str,
        value: str,
        allowed: str,
    ) -> None:
        """Stream names follow AWS's rules, and dead letters never go to the source stream."""
        assert_rejected(make_settings, overrides, key, value, allowed)
