"""The fees the account pays: each venue's signing (the documented examples), its parser (the documented
responses, tests/fixtures/<venue>/account_fees.json), the board's fee field, the detector's choice, the config."""
from __future__ import annotations

import ast
import base64
import hashlib
import math
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.board import Board, RulesWriter, read_entry, read_rules, remove_leftover
from pipeline.board.snapshot import ProcSnapshot
from pipeline.config import load_config
from pipeline.errors import ConfigError, ParseError
from pipeline.fees import (
    STATE_REFUSED,
    STATE_UNREACHABLE,
    FeeLookupError,
    account_fee_or_configured,
    check_fee_credentials,
    read_fee_credentials,
)
from pipeline.health.process import fee_alert, fee_status
from pipeline.model import InstrumentRules
from pipeline.venues import VENUES, load_venue
from pipeline.venues._account import Credentials, form_encode, rate_bps
from pipeline.venues.binance import account as binance
from pipeline.venues.bybit import account as bybit
from pipeline.venues.coinbase import account as coinbase
from pipeline.venues.htx import account as htx
from pipeline.venues.kraken import account as kraken
from pipeline.venues.okx import account as okx
from tests.conftest import write_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FORBIDDEN = {"asyncio", "websockets", "socket", "time", "multiprocessing", "threading", "requests", "urllib"}


def fixture(venue: str) -> bytes:
    return (FIXTURES / venue / "account_fees.json").read_bytes()


# ---------------------------------------------------------------- signing


def test_binance_signs_the_documented_example():
    # rest-api.md "SIGNED Endpoint Examples for POST /api/v3/order - HMAC Keys"
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
               "&timestamp=1499827319559")
    assert binance.sign(payload, secret) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_binance_request_is_the_query_with_its_signature_and_the_key_header():
    [request] = binance.build_requests(Credentials("the-key", "s3cret"), ["BTCUSDT"], 1499827319559)
    query = "symbol=BTCUSDT&recvWindow=5000&timestamp=1499827319559"
    assert request.method == "GET" and request.headers == (("X-MBX-APIKEY", "the-key"),)
    assert request.path == f"/api/v3/account/commission?{query}&signature={binance.sign(query, 's3cret')}"


def test_kraken_signs_the_documented_example():
    # docs.kraken.com "Spot REST Authentication", Examples
    secret = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
    payload = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert kraken.sign("/0/private/AddOrder", 1616492376594, payload, secret) == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==")


def test_kraken_request_is_a_form_post_starting_with_the_nonce():
    secret = base64.b64encode(b"secret").decode()
    [request] = kraken.build_requests(Credentials("k", secret), ["BTC/USD", "ETH/USD"], 1616492376594)
    body = "nonce=1616492376594&pair=BTC%2FUSD%2CETH%2FUSD&fee-info=true"
    assert (request.method, request.path, request.body) == ("POST", "/0/private/TradeVolume", body.encode())
    assert dict(request.headers)["API-Sign"] == kraken.sign("/0/private/TradeVolume", "1616492376594", body, secret)


def test_bybit_signs_timestamp_key_window_and_query():
    # docs/v5/guide.mdx: the text signed for the documented GET example (its secret is not given: the HMAC
    # of that exact text is computed here with the standard library)
    text = "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    import hmac
    assert bybit.sign(1658384314791, "XXXXXXXXXX", 5000, "category=option&symbol=BTC-29JUL22-25000-C", "k") == (
        hmac.new(b"k", text.encode(), hashlib.sha256).hexdigest())
    [request] = bybit.build_requests(Credentials("XXXXXXXXXX", "k"), ["BTCUSDT"], 1658384314791)
    assert request.path == "/v5/account/fee-rate?category=spot&symbol=BTCUSDT"
    assert dict(request.headers) == {"X-BAPI-API-KEY": "XXXXXXXXXX", "X-BAPI-TIMESTAMP": "1658384314791",
                                     "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": bybit.sign(
                                         1658384314791, "XXXXXXXXXX", 5000, "category=spot&symbol=BTCUSDT", "k")}


def test_okx_signs_timestamp_method_path_with_query_and_body():
    assert okx.iso_timestamp(1607418537715) == "2020-12-08T09:08:57.715Z"
    [request] = okx.build_requests(Credentials("k", "s", "p"), ["BTC-USDT"], 1607418537715)
    path = "/api/v5/account/trade-fee?instType=SPOT&instId=BTC-USDT"
    expected = base64.b64encode(__import__("hmac").new(
        b"s", f"2020-12-08T09:08:57.715ZGET{path}".encode(), hashlib.sha256).digest()).decode()
    assert request.path == path
    assert dict(request.headers) == {"OK-ACCESS-KEY": "k", "OK-ACCESS-SIGN": expected,
                                     "OK-ACCESS-TIMESTAMP": "2020-12-08T09:08:57.715Z", "OK-ACCESS-PASSPHRASE": "p"}


def test_htx_signs_method_host_path_and_sorted_encoded_params():
    params = {"AccessKeyId": "e2xxxxxx-99xxxxxx-84xxxxxx-7xxxx", "SignatureMethod": "HmacSHA256",
              "SignatureVersion": "2", "Timestamp": "2017-05-11T15:19:30", "order-id": "1234567890"}
    # the documented pre-signed text of "Signing API Requests" (the secret is not given: HMAC of that text)
    text = ("GET\napi.huobi.pro\n/v1/order/orders\nAccessKeyId=e2xxxxxx-99xxxxxx-84xxxxxx-7xxxx"
            "&SignatureMethod=HmacSHA256&SignatureVersion=2&Timestamp=2017-05-11T15%3A19%3A30&order-id=1234567890")
    import hmac
    assert htx.sign("GET", "api.huobi.pro", "/v1/order/orders", params, "k") == base64.b64encode(
        hmac.new(b"k", text.encode(), hashlib.sha256).digest()).decode()
    assert htx.timestamp_text(1494515970000) == "2017-05-11T15:19:30"
    requests = htx.build_requests(Credentials("id", "k"), [f"s{i}" for i in range(12)], 1494515970000)
    assert [r.path.split("symbols=")[1].split("&")[0] for r in requests] == [
        "%2C".join(f"s{i}" for i in range(10)), "s10%2Cs11"]


def test_coinbase_jwt_carries_the_documented_claims_and_verifies_with_the_keys_public_half():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from pipeline.sim.account import SIM_COINBASE_PEM
    token = coinbase.sign("organizations/o/apiKeys/k", SIM_COINBASE_PEM, "GET", "api.coinbase.com",
                          "/api/v3/brokerage/transaction_summary", 1700000000, "ab" * 16)
    head, claims, signature = token.split(".")
    header, body = coinbase.jwt_parts("organizations/o/apiKeys/k", "GET", "api.coinbase.com",
                                      "/api/v3/brokerage/transaction_summary", 1700000000, "ab" * 16)
    assert f"{head}.{claims}" == coinbase.signing_input(header, body)
    assert body == {"sub": "organizations/o/apiKeys/k", "iss": "cdp", "nbf": 1700000000, "exp": 1700000120,
                    "uri": "GET api.coinbase.com/api/v3/brokerage/transaction_summary"}
    assert header == {"alg": "ES256", "kid": "organizations/o/apiKeys/k", "nonce": "ab" * 16, "typ": "JWT"}
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    public = serialization.load_pem_private_key(SIM_COINBASE_PEM.encode(), None).public_key()
    public.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                  f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))      # raises when it does not verify
    with pytest.raises(ValueError):
        coinbase.build_requests(Credentials("k", "not a pem"), ["BTC-USD"], 1700000000000)


def test_form_encoding_is_rfc3986():
    assert form_encode({"a b": "x/y,z~", "n": 1}) == "a%20b=x%2Fy%2Cz~&n=1"


# ---------------------------------------------------------------- parsing the documented responses


def test_binance_parser_sums_the_three_commissions_of_the_dearer_side():
    [fee] = binance.parse_fees(fixture("binance")).values()
    # taker on a sell: standard .0000002 + .0000004, special .02 + .04, tax .00000114 + .00000116 = .0600029
    # (a buy: .0000005 + .05 + .00000232 = .05000282, the cheaper side)
    assert fee.symbol == "BTCUSDT"
    assert fee.taker_bps == 600.029
    # maker on a sell: .0000001 + .0000004, .01 + .04, .00000112 + .00000116 = .05000278
    assert fee.maker_bps == 500.0278


def test_bybit_parser():
    assert bybit.parse_fees(fixture("bybit"))["ETHUSDT"] == bybit.AccountFee("ETHUSDT", 6.0, 1.0)


def test_okx_parser_turns_the_negative_cost_into_bps():
    assert okx.parse_fees(fixture("okx"), ["BTC-USDT"]) == {"BTC-USDT": okx.AccountFee("BTC-USDT", 10.0, 8.0)}


def test_htx_parser_keeps_the_actual_rates():
    assert htx.parse_fees(fixture("htx"))["btcusdt"] == htx.AccountFee("btcusdt", 20.0, 20.0)


def test_coinbase_parser_gives_the_accounts_tier_to_every_product():
    fees = coinbase.parse_fees(fixture("coinbase"), ["BTC-USD", "ETH-USD"])
    assert fees == {"BTC-USD": coinbase.AccountFee("BTC-USD", 80.0, 60.0),
                    "ETH-USD": coinbase.AccountFee("ETH-USD", 80.0, 60.0)}


def test_kraken_parser_reads_percent_and_matches_the_legacy_pair_name():
    assert kraken.parse_fees(fixture("kraken"), ["BTC/USD"]) == {"BTC/USD": kraken.AccountFee("BTC/USD", 26.0, 16.0)}
    assert [kraken.pair_key(n) for n in ("XXBTZUSD", "XBTUSD", "BTC/USD", "XETHZEUR")] == [
        "BTCUSD", "BTCUSD", "BTCUSD", "ETHEUR"]


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx", "htx", "coinbase", "kraken"])
def test_each_parser_refuses_what_is_not_its_answer_with_a_parse_error(venue):
    parse = load_venue(venue).account_fees.parse
    for raw in (b"not json", b"[]", b'{"code": "1"}'):
        with pytest.raises(ParseError):
            parse(raw, ["BTCUSDT"])


def test_refusals_are_recognized_in_each_venues_own_shape():
    assert binance.refusal(401, b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}') == (
        "HTTP 401 code -2015: invalid API key, IP or permissions")
    assert binance.refusal(400, b'{"code":-1121,"msg":"Invalid symbol."}') is None
    assert bybit.refusal(200, b'{"retCode":10004,"retMsg":"error sign!"}') == "retCode 10004: error sign"
    assert okx.refusal(401, b'{"code":"50113","msg":"Invalid Sign"}') == "HTTP 401 code 50113: invalid sign"
    assert htx.refusal(200, b'{"status":"error","err-code":"api-signature-not-valid"}') == (
        "HTTP 200 api-signature-not-valid: signature not valid")
    assert coinbase.refusal(401, b"Unauthorized") == "HTTP 401"
    assert kraken.refusal(200, b'{"error":["EAPI:Invalid key"]}') == "HTTP 200 EAPI:Invalid key"
    assert kraken.refusal(200, b'{"error":[],"result":{}}') is None


def test_a_rate_becomes_exact_bps():
    assert rate_bps("0.00075", "x", "taker") == 7.5
    assert rate_bps("0.001", "x", "taker") == 10.0
    with pytest.raises(ParseError):
        rate_bps("NaN", "x", "taker")


@pytest.mark.parametrize("venue", VENUES)
def test_account_modules_import_no_io_and_every_venue_declares_its_endpoint(venue):
    record = load_venue(venue)
    if record.account_fees is None:
        pytest.skip(f"{venue} declares no fee endpoint")
    path = Path(__import__(record.account_fees.parse.__module__, fromlist=["x"]).__file__)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
    assert record.account_fees.doc.startswith("https://") and record.account_fees.path.startswith("/")


# ---------------------------------------------------------------- the board and the detector's choice


@pytest.fixture
def board(board_name):
    remove_leftover(board_name)
    b = Board.create(board_name, n_rows=2, depth=2, n_procs=1)
    yield b
    b.close()
    b.destroy()


def test_the_account_fee_shares_the_rules_version_and_keeps_the_rules(board):
    writer = RulesWriter(board, [0])
    rules = InstrumentRules("binance", "BTCUSDT", tick=Decimal("0.01"), step=Decimal("0.00001"),
                            min_qty=Decimal("0.00001"), max_qty=None, min_notional=Decimal("5"), max_notional=None,
                            trading=True, status="TRADING")
    assert math.isnan(read_entry(board, 0)[2]) and read_entry(board, 0)[0] == 0
    writer.write(0, rules)
    writer.write_fees(0, 6.0, 4.0)
    version, read, fee = read_entry(board, 0)
    assert (version, read, fee) == (2, rules, 6.0)
    writer.write_fees(0, 6.0, 4.0)                   # unchanged: no new version
    assert read_entry(board, 0)[0] == 2
    writer.write(0, rules)                           # a rules write keeps the fee
    assert read_entry(board, 0) == (3, rules, 6.0) and read_rules(board, 0) == (3, rules)
    writer.write_fees(0, float("nan"))
    assert read_entry(board, 0)[0] == 4 and math.isnan(read_entry(board, 0)[2])
    with pytest.raises(Exception, match="not a fee"):
        writer.write_fees(0, -1.0)


def test_the_account_fee_replaces_the_configured_one_only_when_there_is_one():
    assert account_fee_or_configured(6.0, 10.0) == (6.0, "account")
    assert account_fee_or_configured(0.0, 10.0) == (0.0, "account")
    assert account_fee_or_configured(float("nan"), 10.0) == (10.0, "config")


def test_health_says_a_refused_lookup_in_an_alert_and_an_answered_one_on_the_feed_line():
    refused = ProcSnapshot(venue="binance", fee_lookup_state=STATE_REFUSED, fee_lookup_status=401,
                           fee_lookup_failures=2)
    assert fee_alert(refused) == "binance: account fee lookup refused (HTTP 401): using configured fees"
    assert fee_status(refused) == " fee lookup failures 2"
    unreachable = ProcSnapshot(venue="okx", fee_lookup_state=STATE_UNREACHABLE)
    assert fee_alert(unreachable) == "okx: account fee lookup unreachable: using configured fees"
    assert fee_status(ProcSnapshot(venue="okx", fee_lookup_state=1)) == " fees account"
    assert fee_alert(ProcSnapshot(venue="okx", fee_lookup_state=1)) == ""


# ---------------------------------------------------------------- configuration


def _config(tmp_path, **binance) -> Path:
    return write_config(tmp_path / "c.yaml", {"simulator": {},
                                              "venues": {"binance": {"instruments": ["BTC/USDT"], **binance}}})


def _problems(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_fee_lookup_is_off_by_default_and_takes_key_and_secret_names(tmp_path):
    assert load_config(_config(tmp_path)).venue("binance").fee_lookup is False
    config = load_config(_config(tmp_path, fee_lookup=True, credentials_env={"key": "BK", "secret": "BS"}))
    assert config.venue("binance").fee_lookup and dict(config.venue("binance").credentials_env) == {
        "key": "BK", "secret": "BS"}


def test_fee_lookup_without_credentials_names_the_field(tmp_path):
    assert ("venues.binance.fee_lookup: needs venues.binance.credentials_env: the names of the environment "
            "variables holding the API key, secret") in _problems(_config(tmp_path, fee_lookup=True))


def test_credentials_without_fee_lookup_on_a_venue_that_does_not_log_in_are_refused(tmp_path):
    assert "venues.binance.credentials_env: only okx takes credentials" in _problems(
        _config(tmp_path, credentials_env={"key": "BK", "secret": "BS"}))


def test_okx_needs_its_passphrase_and_kraken_on_the_simulator_is_refused(tmp_path):
    okx_config = write_config(tmp_path / "o.yaml", {"simulator": {}, "venues": {"okx": {
        "instruments": ["BTC/USDT"], "fee_lookup": True, "credentials_env": {"key": "OK", "secret": "OS"}}}})
    assert "venues.okx.credentials_env: okx needs passphrase too" in _problems(okx_config)
    kraken_config = write_config(tmp_path / "k.yaml", {"simulator": {}, "venues": {"kraken": {
        "instruments": ["BTC/USD"], "fee_lookup": True, "credentials_env": {"key": "KK", "secret": "KS"}}}})
    assert "venues.kraken.fee_lookup: the simulator answers kraken's signed POST on its account port only" in (
        _problems(kraken_config))


def test_a_secret_in_the_config_is_never_echoed(tmp_path):
    text = _problems(_config(tmp_path, fee_lookup=True, credentials_env={"key": "BK", "secret": "abc def/123=="}))
    assert "venues.binance.credentials_env.secret" in text and "abc def" not in text


def test_unset_credential_variables_are_named_at_start_and_never_their_values(tmp_path):
    config = load_config(_config(tmp_path, fee_lookup=True, credentials_env={"key": "BK", "secret": "BS"}))
    assert check_fee_credentials(config, {"BK": "key"}) == (
        "venues.binance.credentials_env.secret: environment variable BS is not set (fee_lookup needs the account's "
        "API secret)")
    assert check_fee_credentials(config, {"BK": "key", "BS": "s"}) is None
    assert read_fee_credentials(config.venue("binance"), {"BK": "key", "BS": "s"}) == Credentials("key", "s")
    with pytest.raises(FeeLookupError, match="environment variable\\(s\\) BS not set"):
        read_fee_credentials(config.venue("binance"), {"BK": "key"})
    assert "secret=" not in repr(Credentials("key", "hidden"))
