#!/usr/bin/env bash
# Makes the SM2 certificates the gateway's certificate tests read, with
# OpenSSL (3.0 or later: SM2 keys, SM3, SM2-with-SM3 signatures), as a
# national CA (GY/T 389) would issue them. The outputs are committed, so
# the tests need no OpenSSL; run this only to make them again.
#   ca.pem          the CA (self-signed, 20 years)
#   city.pem        the city platform's certificate, issued by the CA,
#                   serial 0x3601000001, valid 2026-12-08 for 20 years
#   city.key.hex    its private key, 64 hex digits (signs test packages)
#   city.der        the same certificate, DER
#   rogue.pem       a certificate for the same name from another CA
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
id=1234567812345678
openssl ecparam -name SM2 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sm3 -sigopt "distid:$id" \
    -subj "/C=CN/O=EBS test CA/CN=应急广播测试根证书" -utf8 -days 7300 -out ca.pem
openssl ecparam -name SM2 -genkey -noout -out "$tmp/city.key"
# Issued straight from the key (req -x509 -CA): OpenSSL 3.0 does not
# verify an SM2 request's own signature when issuing from it.
openssl req -x509 -new -key "$tmp/city.key" -CA ca.pem -CAkey "$tmp/ca.key" -sm3 \
    -sigopt "distid:$id" -subj "/C=CN/O=南昌市/CN=南昌市应急广播平台" -utf8 \
    -set_serial 0x3601000001 -days 7300 -out city.pem
openssl x509 -in city.pem -outform DER -out city.der
openssl ec -in "$tmp/city.key" -text -noout 2>/dev/null |
    sed -n '/priv:/,/pub:/p' | grep -v -e priv: -e pub: | tr -d ' :\n' > city.key.hex
openssl ecparam -name SM2 -genkey -noout -out "$tmp/other.key"
openssl req -x509 -new -key "$tmp/other.key" -sm3 -subj "/CN=Other CA" -days 7300 -out "$tmp/other.pem"
openssl req -x509 -new -key "$tmp/city.key" -CA "$tmp/other.pem" -CAkey "$tmp/other.key" -sm3 \
    -subj "/C=CN/O=南昌市/CN=南昌市应急广播平台" -utf8 -set_serial 0x3601000001 -days 7300 -out rogue.pem
openssl verify -vfyopt "distid:$id" -CAfile ca.pem city.pem
