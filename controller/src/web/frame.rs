//! The document frame every console page shares, signed in or not: the head with the embedded stylesheet and script, the bare page of the sign-in form, and the page that only says what went wrong.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

pub fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · nasfleet" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A page for someone not signed in (the sign-in form).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main.narrow {
                    h1 { "nasfleet" }
                    (body)
                }
            }
        }
    }
}

/// A page that only says what went wrong.
pub fn problem(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let markup = bare(
        title,
        html! {
            h2 { (title) }
            p.error #problem { (message) }
            p { a href="/" { "Back to the dashboard" } }
        },
    );
    (status, Html(markup.into_string())).into_response()
}
