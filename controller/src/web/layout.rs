//! The frame every page shares (header, navigation by role, sign-out), the embedded stylesheet and script, and the small pieces pages repeat: status badges, times, sizes, buttons that post with the CSRF token.

use super::frame;
use super::session::{CSRF_FIELD, Person};
use crate::engine::access::Access;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

const STYLESHEET: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Protection,
    Replication,
    Runs,
    Users,
    Tokens,
    Audit,
}

const ENTRIES: [(Nav, &str, &str, Access); 7] = [
    (Nav::Dashboard, "/", "Dashboard", Access::Read),
    (
        Nav::Protection,
        "/protection",
        "Data Protection",
        Access::Read,
    ),
    (
        Nav::Replication,
        "/replication",
        "Replication",
        Access::Read,
    ),
    (Nav::Runs, "/runs", "Runs", Access::Read),
    (Nav::Users, "/users", "Users", Access::Administer),
    (Nav::Tokens, "/tokens", "Tokens", Access::Administer),
    (Nav::Audit, "/audit", "Audit Log", Access::Administer),
];

/// A whole page for a signed-in person.
pub fn page(person: &Person, nav: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (frame::head(title))
            body data-csrf=(person.csrf) {
                header.top {
                    a.brand href="/" { "nasfleet" }
                    nav {
                        @for (entry, href, label, access) in ENTRIES {
                            @if person.can(access) {
                                a href=(href) class=[(entry == nav).then_some("active")] { (label) }
                            }
                        }
                    }
                    div.who {
                        span #whoami { (person.user.name) " · " (person.user.role) }
                        form method="post" action="/signout" {
                            (csrf(person))
                            button.link type="submit" #signout { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    p.error #flash hidden {}
                    (body)
                }
                dialog #confirm {
                    p #confirm-text {}
                    div.actions {
                        button type="button" #confirm-cancel { "CANCEL" }
                        button.danger type="button" #confirm-ok { "CONFIRM" }
                    }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

pub fn csrf(person: &Person) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(person.csrf); }
}

/// A button that posts to `action`; with `confirm`, the script asks first.
pub fn post_button(
    person: &Person,
    action: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf(person))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A run or task status as a coloured badge: PENDING, RUNNING, FINISHED,
/// SUCCESS, FAILED, ...
pub fn badge(word: &str) -> Markup {
    html! { span class={ "status s-" (word) } { (word) } }
}

/// A status that opens its reason when it is FAILED.
pub fn status_with_reason(word: &str, reason: &str) -> Markup {
    if word == "FAILED" && !reason.is_empty() {
        html! {
            details.reason {
                summary { (badge(word)) }
                p.reason-text { (reason) }
            }
        }
    } else {
        badge(word)
    }
}

pub use crate::engine::state::local_time as when;

/// Rows one task table shows; a fleet with thousands of tasks pages
/// through them instead of loading megabytes at once.
pub const ROWS_PER_PAGE: usize = 100;

/// The page number `param` asks for in `query` (1 when absent or bad).
pub fn page_number(query: &std::collections::HashMap<String, String>, param: &str) -> usize {
    query
        .get(param)
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

/// The rows of page `page` (clamped to the last) and, when there is more
/// than one page, the links between them (`path?param=N`).
pub fn paged<'a, T>(items: &'a [T], page: usize, path: &str, param: &str) -> (&'a [T], Markup) {
    let pages = items.len().div_ceil(ROWS_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * ROWS_PER_PAGE;
    let rows = &items[start.min(items.len())..(start + ROWS_PER_PAGE).min(items.len())];
    let links = if pages == 1 {
        html! {}
    } else {
        html! {
            nav.pager data-pager=(param) {
                @if page > 1 { a href={ (path) "?" (param) "=" (page - 1) } rel="prev" { "Previous" } }
                span { "Page " (page) " of " (pages) " (" (items.len()) " tasks)" }
                @if page < pages { a href={ (path) "?" (param) "=" (page + 1) } rel="next" { "Next" } }
            }
        }
    };
    (rows, links)
}

/// Field errors under their field: `message` is the engine's `field: rule`.
pub fn field_error(errors: &[(String, String)], field: &str) -> Markup {
    html! {
        @for (f, message) in errors {
            @if f == field {
                p.field-error data-field=(field) { (message) }
            }
        }
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    response
}

pub async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_at_most_a_page_of_rows_and_clamp() {
        let items: Vec<usize> = (0..250).collect();
        let (rows, links) = paged(&items, 1, "/replication", "page");
        assert_eq!(rows.len(), ROWS_PER_PAGE);
        assert!(links.into_string().contains("Page 1 of 3"));
        let (rows, _) = paged(&items, 9, "/replication", "page");
        assert_eq!(rows.first(), Some(&200));
        assert_eq!(rows.len(), 50);
        let (rows, links) = paged(&items[..3], 1, "/replication", "page");
        assert_eq!(rows.len(), 3);
        assert!(links.into_string().is_empty());
    }
}
