from pgharness.evidence import mask


def test_passwords_are_masked_and_nothing_else():
    text = (
        "primary_conninfo = 'host=primary user=repli password=repli application_name=standby'\n"
        "      POSTGRES_PASSWORD: postgres\n"
        '      REPLICATION_PASSWORD: "s3cret"\n'
        "replication user repli streams from postgres\n"
    )
    masked = mask(text, ("postgres", "repli"))
    assert "password=******** application_name=standby" in masked
    assert "POSTGRES_PASSWORD: ********" in masked
    assert 'REPLICATION_PASSWORD: "********"' in masked
    assert "replication user repli streams from postgres" in masked
    assert "s3cret" not in masked


def test_a_chosen_secret_is_masked_wherever_it_appears():
    text = "FATAL: password authentication failed; tried Sup3r-s3cret in a log line\nuser postgres\n"
    masked = mask(text, ("Sup3r-s3cret", "postgres"))
    assert "Sup3r-s3cret" not in masked
    assert "tried ******** in a log line" in masked
    # The public defaults are not hidden: they are words like the user name.
    assert "user postgres" in masked
