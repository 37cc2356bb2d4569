from harness.cluster import Cluster


def test_passwords_are_masked_and_nothing_else():
    text = (
        "primary_conninfo = 'host=primary user=repli password=repli application_name=standby'\n"
        "      POSTGRES_PASSWORD: postgres\n"
        '      REPLICATION_PASSWORD: "s3cret"\n'
        "replication user repli streams from postgres\n"
    )
    masked = Cluster._mask(text)
    assert "password=******** application_name=standby" in masked
    assert "POSTGRES_PASSWORD: ********" in masked
    assert 'REPLICATION_PASSWORD: "********"' in masked
    assert "replication user repli streams from postgres" in masked
    assert "s3cret" not in masked
