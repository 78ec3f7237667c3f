//! Validated orders → signed requests: the one place that turns an order
//! into what a live run sends or a dry run writes, for either API. The
//! engine and the dry run ask; neither knows how an API builds or signs.

use crate::api::xpay_refund::Steps;
use crate::api::{cancel_body, v2, xpay, ApiKind};
use crate::category::Category;
use crate::input::{MpSigMode, OrderRef, Rules};
use crate::results::output::{DrySigned, DryV2};
use crate::secret::Secret;
use crate::sign::{CancelParams, Hex64, Signer};

/// Constants every request carries.
#[derive(Clone, Debug)]
pub struct Request {
    pub appid: String,
    pub offer_id: String,
    pub pf: String,
    pub sandbox: bool,
}

impl Request {
    /// The signed fields of one v1 request for `order`, sent at `ts`; rows
    /// without a pf take the configured one.
    pub fn params<'a>(&'a self, order: &OrderRef<'a>, ts: u64) -> CancelParams<'a> {
        CancelParams {
            openid: order.openid,
            appid: &self.appid,
            offer_id: &self.offer_id,
            ts,
            zone_id: order.zone_id,
            pf: order.pf.unwrap_or(&self.pf),
            bill_no: order.bill_no,
            user_ip: order.user_ip,
            pay_item: order.pay_item,
        }
    }
}

/// One request, signed and ready to send.
pub struct SignedRequest {
    pub uri: &'static str,
    /// After `access_token=TOKEN` in the query string (v2's signatures).
    pub query_tail: String,
    pub body: Vec<u8>,
    /// v1 sent without mp_sig (no session key): a 90009/90010 says so.
    pub without_session_key: bool,
}

/// Signs a run's requests: its constants, its API's rules, and the AppKey's
/// HMAC keyed once for the run.
pub struct Signing {
    request: Request,
    rules: Rules,
    mp_sig: MpSigMode,
    signer: Signer,
    pay_signer: v2::PaySigner,
}

impl Signing {
    pub fn new(request: &Request, rules: &Rules, mp_sig: MpSigMode, app_key: &Secret) -> Signing {
        Signing {
            request: request.clone(),
            rules: rules.clone(),
            mp_sig,
            signer: Signer::new(app_key.expose(), request.sandbox),
            pay_signer: v2::PaySigner::new(app_key.expose()),
        }
    }

    pub fn api(&self) -> ApiKind {
        self.rules.api
    }

    pub fn sandbox(&self) -> bool {
        self.request.sandbox
    }

    /// v2's `env`: 1 in the sandbox.
    fn env(&self) -> u8 {
        u8::from(self.request.sandbox)
    }

    /// v2's BODY for `order` at `ts`, with its `pay_sig` (the AppKey over
    /// `URI&BODY`) and `signature` (the user's session key over BODY).
    fn v2_signed(&self, order: &OrderRef<'_>, session_key: &str, ts: u64) -> (String, Hex64, Hex64) {
        let body = v2::CancelV2::of(order, &self.rules.offer_id, self.env(), ts).body();
        let pay_sig = self.pay_signer.sign(&body);
        let signature = v2::signature(session_key, &body);
        (body, pay_sig, signature)
    }

    /// xpay's cancel BODY for `order`, with its `pay_sig` and `signature`.
    fn xpay_signed(&self, order: &OrderRef<'_>, session_key: &str) -> (String, Hex64, Hex64) {
        let body = xpay::CancelCurrencyPay {
            openid: order.openid,
            env: self.env(),
            // Validation made sure of one (the row's, or --user-ip).
            user_ip: order.user_ip.unwrap_or_default(),
            pay_order_id: order.bill_no,
            order_id: order.cancel_id.as_deref().unwrap_or_default(),
            amount: order.amount.unwrap_or(0),
        }
        .body();
        let pay_sig = self.pay_signer.sign_at(xpay::CANCEL_URI, &body);
        let signature = xpay::signature(session_key, &body);
        (body, pay_sig, signature)
    }

    /// The request that tells a refused AppKey from a refused session key
    /// ([`crate::api::Action::CheckKey`]): a query for the row's order,
    /// signed by the AppKey alone.
    pub fn key_check(&self, order: &OrderRef<'_>) -> SignedRequest {
        let body = xpay::query_order_body(order.openid, self.env(), xpay::OrderKey::OrderId(order.bill_no));
        self.pay_signed(xpay::QUERY_URI, body)
    }

    /// A request signed by the AppKey alone (`pay_sig` over `URI&BODY`).
    fn pay_signed(&self, uri: &'static str, body: String) -> SignedRequest {
        let pay_sig = self.pay_signer.sign_at(uri, &body);
        SignedRequest {
            uri,
            query_tail: format!("&pay_sig={}", pay_sig.as_str()),
            body: body.into_bytes(),
            without_session_key: false,
        }
    }

    /// `--refund-reason`: the reason of refund rows without one.
    fn refund_reason(&self) -> &str {
        self.rules.refund_reason.as_deref().unwrap_or("1")
    }

    /// The request for `order` at `ts`, signed with `token`; a row of
    /// several steps (xpay-refund) sends the one `steps` is at.
    pub fn live(&self, order: &OrderRef<'_>, steps: Option<&Steps>, token: &Secret, ts: u64) -> SignedRequest {
        if let Some(steps) = steps {
            let (uri, body) = steps.request(order, self.env(), self.refund_reason());
            return self.pay_signed(uri, body);
        }
        match self.rules.api {
            ApiKind::V1 => {
                let params = self.request.params(order, ts);
                let with_mp = self.mp_sig.inputs(Some(token), order.session_key);
                let sigs = self.signer.sign(&params, with_mp);
                SignedRequest {
                    uri: self.signer.uri(),
                    query_tail: String::new(),
                    body: cancel_body(&params, &sigs),
                    without_session_key: with_mp.is_none(),
                }
            }
            ApiKind::V2 => {
                // A v2 row without a session key is never sent (missing_session_key).
                let (body, pay_sig, signature) = self.v2_signed(order, order.session_key.unwrap_or_default(), ts);
                SignedRequest {
                    uri: v2::URI,
                    query_tail: v2::query_tail(&pay_sig, &signature),
                    body: body.into_bytes(),
                    without_session_key: false,
                }
            }
            ApiKind::XpayRefund => unreachable!("a refund row is sent by its steps"),
            ApiKind::Xpay => {
                // Without a session key the row is never sent (missing_session_key).
                let (body, pay_sig, signature) = self.xpay_signed(order, order.session_key.unwrap_or_default());
                SignedRequest {
                    uri: xpay::CANCEL_URI,
                    query_tail: format!("&pay_sig={}&signature={}", pay_sig.as_str(), signature.as_str()),
                    body: body.into_bytes(),
                    without_session_key: false,
                }
            }
        }
    }

    /// What a dry run writes for `order` at `ts`: the same signatures a live
    /// run would send (taken by value: a derived cancellation id moves into
    /// the output instead of being copied). `access_token` is only for v1's
    /// `mp_sig`.
    pub fn dry(&self, order: OrderRef<'_>, access_token: Option<&Secret>, ts: u64) -> DrySigned {
        match self.rules.api {
            ApiKind::V1 => {
                let params = self.request.params(&order, ts);
                let s = self.signer.sign(&params, self.mp_sig.inputs(access_token, order.session_key));
                DrySigned { category: Category::Signed, ts: Some(ts), sig: Some(s.sig), mp_sig: s.mp_sig, v2: None }
            }
            ApiKind::XpayRefund => {
                // Steps 1 and 2; the refund needs WeChat's left_fee.
                let mut v2 = DryV2::default();
                let find = Steps::new();
                let (uri, body) = find.request(&order, self.env(), self.refund_reason());
                let pay_sig = self.pay_signer.sign_at(uri, &body);
                (v2.body, v2.pay_sig) = (body, Some(pay_sig));
                let (uri, body) = Steps::paid_order_query(&order, self.env());
                v2.order_pay_sig = Some(self.pay_signer.sign_at(uri, &body));
                v2.order_body = body;
                v2.cancel_bill_no = order.cancel_id.map(std::borrow::Cow::into_owned).unwrap_or_default();
                DrySigned { ts: Some(ts), v2: Some(Box::new(v2)), ..DrySigned::unsigned(Category::Signed) }
            }
            ApiKind::V2 | ApiKind::Xpay => {
                let mut v2 = DryV2::default();
                // Without a session key the row is not sent (missing_session_key).
                if let Some(key) = order.session_key {
                    let (body, pay_sig, signature) = match self.rules.api {
                        ApiKind::Xpay => self.xpay_signed(&order, key),
                        _ => self.v2_signed(&order, key, ts),
                    };
                    (v2.body, v2.pay_sig, v2.signature) = (body, Some(pay_sig), Some(signature));
                }
                v2.cancel_bill_no = order.cancel_id.map(std::borrow::Cow::into_owned).unwrap_or_default();
                DrySigned { ts: Some(ts), v2: Some(Box::new(v2)), ..DrySigned::unsigned(Category::Signed) }
            }
        }
    }
}
